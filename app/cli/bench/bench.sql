-- The benchmark's statements (``app.cli.bench.statements``), not the product's: the product
-- never reads them. In the order of the modules that run them: ``usher bench`` (core,
-- invariants), the intake figures (intake).
-- The scratch databases' CREATE and DROP DATABASE are not here: a database name cannot be a
-- bind parameter, so ``app.cli.bench.scratch`` composes them with psycopg.sql.Identifier.

-- name: run_stamps
-- What the hand-offs are read from: every execution of the run's actions, with its line.
SELECT e.queue_id, e.enqueued_at, e.scheduled_at, e.started_at, e.finished_at
FROM executions e JOIN actions a ON a.id = e.action_id WHERE a.ref = ANY(:refs)

-- name: run_succeeded
-- How far a run is, and how many of it were lost at the end.
SELECT count(*) FROM executions e JOIN actions a ON a.id = e.action_id
WHERE a.ref = ANY(:refs) AND e.status = 'succeeded'

-- name: run_figures
-- The run's last completion, every completion (for the throughput over time) and every
-- queue wait (request to start), in one read.
SELECT extract(epoch FROM max(e.finished_at)) AS last,
       array_agg(extract(epoch FROM e.finished_at)) AS stamps,
       array_agg(extract(epoch FROM e.started_at - e.enqueued_at) * 1000) AS waits
FROM executions e JOIN actions a ON a.id = e.action_id WHERE a.ref = ANY(:refs)

-- name: line_queue_ids
-- The lines (one per partition) of an action.
SELECT q.id FROM queues q JOIN actions a ON a.id = q.action_id WHERE a.ref = :ref

-- name: line_tries
-- Every attempt of every execution of the lines: finished ones from the attempts table, the
-- current one from the execution row when it has no history row yet.
WITH tries AS (
    SELECT t.execution_id AS id, t.attempt, t.queued_at, t.scheduled_at, t.finished_at,
           t.kept_slot
    FROM attempts t JOIN executions e ON e.id = t.execution_id
    WHERE e.queue_id = ANY(:ids)
    UNION ALL
    SELECT e.id, e.attempt, e.queued_at, e.scheduled_at, e.finished_at, e.holds_slot
    FROM executions e
    WHERE e.queue_id = ANY(:ids) AND NOT EXISTS (
        SELECT 1 FROM attempts t WHERE t.execution_id = e.id AND t.attempt = e.attempt)
)
SELECT tries.*, e.queue_id, e.priority, e.seq,
       coalesce(lag(tries.kept_slot) OVER (
           PARTITION BY tries.id ORDER BY tries.attempt), false) AS after_kept
FROM tries JOIN executions e ON e.id = tries.id

-- name: line_fifo_violations
-- Grants made while an older execution of the same line and priority was eligible and
-- waiting: queued, or a retry already due (a retry that kept its slot does not wait). The
-- tries are line_tries's, written again whole.
WITH x AS (
    WITH tries AS (
        SELECT t.execution_id AS id, t.attempt, t.queued_at, t.scheduled_at, t.finished_at,
               t.kept_slot
        FROM attempts t JOIN executions e ON e.id = t.execution_id
        WHERE e.queue_id = ANY(:ids)
        UNION ALL
        SELECT e.id, e.attempt, e.queued_at, e.scheduled_at, e.finished_at, e.holds_slot
        FROM executions e
        WHERE e.queue_id = ANY(:ids) AND NOT EXISTS (
            SELECT 1 FROM attempts t WHERE t.execution_id = e.id AND t.attempt = e.attempt)
    )
    SELECT tries.*, e.queue_id, e.priority, e.seq,
           coalesce(lag(tries.kept_slot) OVER (
               PARTITION BY tries.id ORDER BY tries.attempt), false) AS after_kept
    FROM tries JOIN executions e ON e.id = tries.id
)
SELECT count(*) AS n FROM x b JOIN x a
  ON a.queue_id = b.queue_id AND a.priority = b.priority AND a.seq < b.seq
WHERE b.scheduled_at IS NOT NULL AND NOT a.after_kept
  AND a.queued_at <= b.scheduled_at
  AND COALESCE(a.scheduled_at, a.finished_at, 'infinity') > b.scheduled_at

-- name: line_unfinished
SELECT count(*) AS n FROM executions e JOIN actions a ON a.id = e.action_id
WHERE a.ref = :ref AND e.status <> ALL(:final)

-- name: counter_recount
-- Every line's counters beside a recount of its executions (r_ the recount).
SELECT q.id, q.queue_length, q.active_count, q.total_enqueued, q.total_completed,
       q.total_failed, q.total_cancelled, q.total_expired, q.next_seq,
       count(e.id) FILTER (WHERE e.status = 'queued') AS r_queue_length,
       count(e.id) FILTER (WHERE e.status IN ('scheduled', 'running')
                           OR (e.status = 'retrying' AND e.holds_slot)) AS r_active_count,
       count(e.id) AS r_total_enqueued,
       count(e.id) FILTER (WHERE e.status = 'succeeded') AS r_total_completed,
       count(e.id) FILTER (WHERE e.status IN ('failed', 'timed_out', 'dead'))
           AS r_total_failed,
       count(e.id) FILTER (WHERE e.status = 'cancelled') AS r_total_cancelled,
       count(e.id) FILTER (WHERE e.status = 'expired') AS r_total_expired,
       coalesce(max(e.seq), 0) AS r_next_seq
FROM queues q LEFT JOIN executions e ON e.queue_id = q.id
GROUP BY q.id

-- name: intake_enforcements
-- Events are done once each has its enforcement.
SELECT count(*) FROM enforcements

-- name: intake_executed
SELECT count(*) FROM enforcements WHERE status = 'executed'

-- name: intake_counter_mismatches
-- Lines whose counters differ from a recount of their executions (should be 0): the
-- counters intake moves, not the others counter_recount compares.
SELECT count(*) FROM queues q LEFT JOIN (
    SELECT queue_id, count(*) AS n,
           count(*) FILTER (WHERE status = 'queued') AS waiting
    FROM executions GROUP BY queue_id) e ON e.queue_id = q.id
WHERE q.total_enqueued <> coalesce(e.n, 0)
   OR q.queue_length <> coalesce(e.waiting, 0)
   OR q.next_seq <> coalesce(e.n, 0)
