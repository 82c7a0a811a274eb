-- The benchmark's statements (``app.cli.bench.statements``), not the product's: the product
-- never reads them. In the order of the modules that run them: ``usher bench`` (core,
-- invariants), the intake figures (intake), ``usher bench-web`` (seed, then web and plans).
-- The scratch databases' CREATE and DROP DATABASE are not here: a database name cannot be a
-- bind parameter, so ``app.cli.bench.scratch`` composes them with psycopg.sql.Identifier.

-- name: run_stamps
-- What the hand-offs are read from: every execution of the run's actions, with its line.
SELECT e.queue_id, e.enqueued_at, e.scheduled_at, e.started_at, e.finished_at
FROM executions e JOIN actions a ON a.id = e.action_id WHERE a.ref = ANY(:refs)

-- name: run_progress
-- How far a run is, read four times a second while it runs: the lines' own counters, one row
-- per line. A count of the run's executions cost a poll 6 ms at the end of a 10,000 run on
-- the wide table and 18-43 ms through the state table or the view here (Postgres never
-- analyzed it), a fifth of Postgres's time in the run: the benchmark measured itself.
SELECT coalesce(sum(q.total_completed), 0) FROM queues q
JOIN actions a ON a.id = q.action_id WHERE a.ref = ANY(:refs)

-- name: run_succeeded
-- How many of a run succeeded, counted once it ended (the lost are the others).
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
-- Every line's counters beside a recount of its executions (r_ the recount). A line counts
-- what joined it: a delayed run (no seq yet), or one cancelled or rejected before it
-- joined, is not counted.
SELECT q.id, q.queue_length, q.active_count, q.total_enqueued, q.total_completed,
       q.total_failed, q.total_cancelled, q.total_expired, q.next_seq,
       count(e.id) FILTER (WHERE e.status = 'queued') AS r_queue_length,
       count(e.id) FILTER (WHERE e.status IN ('scheduled', 'running')
                           OR (e.status = 'retrying' AND e.holds_slot)) AS r_active_count,
       count(e.seq) AS r_total_enqueued,
       count(e.id) FILTER (WHERE e.status = 'succeeded') AS r_total_completed,
       count(e.id) FILTER (WHERE e.status IN ('failed', 'timed_out', 'dead'))
           AS r_total_failed,
       count(e.seq) FILTER (WHERE e.status = 'cancelled') AS r_total_cancelled,
       count(e.id) FILTER (WHERE e.status = 'expired') AS r_total_expired,
       coalesce(max(e.seq), 0) AS r_next_seq
FROM queues q LEFT JOIN executions e ON e.queue_id = q.id
GROUP BY q.id

-- name: level_recount
-- Every level's active count beside a recount of the executions holding one of its slots,
-- and how many others still name it (a slot left held: none may).
SELECT l.id, l.ref, l.active,
       count(e.id) FILTER (WHERE e.status IN ('scheduled', 'running')
                           OR (e.status = 'retrying' AND e.holds_slot)) AS r_active,
       count(e.id) FILTER (WHERE NOT (e.status IN ('scheduled', 'running')
                           OR (e.status = 'retrying' AND e.holds_slot))) AS stray
FROM levels l LEFT JOIN executions e ON l.id = ANY(e.levels)
GROUP BY l.id, l.ref, l.active

-- name: intake_enforcements
-- Events are done once each has its enforcement.
SELECT count(*) FROM enforcements

-- name: intake_executed
SELECT count(*) FROM enforcements WHERE status = 'executed'

-- name: intake_counter_mismatches
-- Lines whose counters differ from a recount of their executions (should be 0): the
-- counters intake moves, not the others counter_recount compares.
SELECT count(*) FROM queues q LEFT JOIN (
    SELECT queue_id, count(seq) AS n,
           count(*) FILTER (WHERE status = 'queued') AS waiting
    FROM executions GROUP BY queue_id) e ON e.queue_id = q.id
WHERE q.total_enqueued <> coalesce(e.n, 0)
   OR q.queue_length <> coalesce(e.waiting, 0)
   OR q.next_seq <> coalesce(e.n, 0)

-- name: seed_random
-- Each seeding step's random() starts from the same seed: the same database every time.
SELECT setseed(0.42)

-- name: seed_packs
INSERT INTO packs (name, description, policy)
SELECT format('pack%s', lpad(p::text, 2, '0')), 'bench-web pack', '{"concurrency": 4}'
FROM generate_series(0, :packs - 1) p

-- name: seed_actions
-- Action 0 is the busy one; every 50th (from 5) is partitioned by host.
INSERT INTO actions (pack_id, ref, name, runner, policy, timeout_s)
SELECT pk.id, pk.name || '.' || n.name, n.name,
       (ARRAY['noop', 'http', 'shell', 'python', 'sleep'])[i % 5 + 1],
       CASE WHEN i = 0 THEN '{"concurrency": 8}'::jsonb
            WHEN i % 50 = 5 THEN '{"concurrency": 2, "partition_by": ["host"]}'::jsonb
            WHEN i % 3 = 0 THEN jsonb_build_object('concurrency', i % 7 + 1)
            ELSE '{}'::jsonb END,
       CASE WHEN i % 4 = 0 THEN 60 END
FROM generate_series(0, :actions - 1) i
CROSS JOIN LATERAL (SELECT format('action%s', lpad(i::text, 4, '0')) AS name) n
JOIN packs pk ON pk.name = format('pack%s', lpad((i % :packs)::text, 2, '0'))

-- name: seed_queues
INSERT INTO queues (action_id, partition_key)
SELECT a.id, CASE WHEN a.policy -> 'partition_by' IS NULL THEN '' ELSE 'host=db' || h END
FROM actions a CROSS JOIN generate_series(1, 5) h
WHERE h = 1 OR a.policy -> 'partition_by' IS NOT NULL

-- name: seed_executions
-- Every execution first finishes (ids, seq and enqueued_at grow together over a week);
-- the tail of each line is then turned into waiting, running and retrying work.
WITH lines AS (
    SELECT row_number() OVER (ORDER BY q.id) - 1 AS idx, q.id, q.action_id,
           q.partition_key
    FROM queues q WHERE q.action_id <> :busy
), busy AS (
    SELECT id, action_id, partition_key FROM queues WHERE action_id = :busy
), src AS (
    SELECT g, random() AS r, random() AS r2, random() AS r3,
           now() - make_interval(secs => (:n - g) * 604800.0 / :n) AS t,
           CASE WHEN g % :share = 0 THEN -1
                ELSE floor(random() * (SELECT count(*) FROM lines)) END AS idx
    FROM generate_series(1, :n) g
), placed AS (
    SELECT s.*, coalesce(l.id, b.id) AS queue_id,
           coalesce(l.action_id, b.action_id) AS action_id,
           coalesce(l.partition_key, b.partition_key) AS partition_key,
           CASE WHEN s.r < 0.955 THEN 'succeeded' WHEN s.r < 0.975 THEN 'dead'
                WHEN s.r < 0.99 THEN 'cancelled' ELSE 'expired' END AS status
    FROM src s LEFT JOIN lines l ON l.idx = s.idx LEFT JOIN busy b ON s.idx = -1
), timed AS (
    SELECT p.*, CASE WHEN status = 'dead' THEN 4
                     WHEN status = 'succeeded' AND r2 < 0.05 THEN 2 ELSE 1 END AS attempt
    FROM placed p
), made AS MATERIALIZED (
    -- ids in g order, as the columns' order of one INSERT gave them before the split
    SELECT nextval('execution_requests_id_seq') AS id, x.* FROM (
        SELECT action_id, queue_id,
               row_number() OVER (PARTITION BY queue_id ORDER BY g) AS seq, status,
               jsonb_build_object('host', CASE WHEN partition_key = ''
                                               THEN 'db' || (floor(r3 * 5) + 1)
                                               ELSE split_part(partition_key, '=', 2) END,
                                  'n', g) AS parameters,
               attempt, t, ran.scheduled_at, ran.started_at,
               CASE WHEN ran.started_at IS NULL THEN t + interval '5 minutes'
                    ELSE ran.started_at + make_interval(secs => power(10, r3 * 4 - 2))
                    END AS finished_at,
               CASE WHEN ran.started_at IS NOT NULL
                    THEN format('celery@bench%s/%s', g % 4, g % 8) END AS worker,
               CASE WHEN status = 'succeeded' THEN '{"ok": true}'::jsonb END AS result,
               CASE status WHEN 'dead' THEN 'RuntimeError: boom'
                           WHEN 'cancelled' THEN 'cancelled by request'
                           WHEN 'expired' THEN 'waited longer than queue_timeout_s'
                           END AS error,
               -- who asked (the search's requester filters): 1 in 10 a rule, 1 in 10 a token
               CASE g % 10 WHEN 0 THEN 'rule:bench.r' || (g % 7) WHEN 1 THEN 'ops'
                           END AS requested_by
        FROM timed CROSS JOIN LATERAL (
            SELECT t + make_interval(secs => attempt - 1 + r2 * 2) AS scheduled_at,
                   t + make_interval(secs => attempt - 1 + r2 * 2 + 0.003) AS started_at
            WHERE status IN ('succeeded', 'dead')
            UNION ALL SELECT NULL, NULL WHERE status NOT IN ('succeeded', 'dead')
        ) ran
        ORDER BY g OFFSET 0
    ) x
), requests AS (
    INSERT INTO execution_requests (id, action_id, queue_id, seq, parameters, enqueued_at,
                                    requested_by)
    SELECT id, action_id, queue_id, seq, parameters, t, requested_by FROM made ORDER BY id
)
INSERT INTO execution_state (id, queue_id, seq, priority, status, attempt, queued_at,
                             scheduled_at, published_at, started_at, finished_at, worker,
                             result, error)
SELECT id, queue_id, seq, 0, status, attempt, t + make_interval(secs => attempt - 1),
       scheduled_at, scheduled_at, started_at, finished_at, worker, result, error
FROM made ORDER BY id

-- name: seed_tails
-- The tail of each line (k = 1 is its newest execution) waits, runs, retries, or finished
-- in the last five minutes (the busy line at 20/s), for the charts and the pace.
WITH tail AS (
    SELECT q.id AS queue_id, q.action_id = :busy AS busy,
           CASE WHEN q.action_id = :busy THEN :busy_queued
                WHEN q.id % 5 = 0 THEN q.id % 37 ELSE 0 END AS queued,
           CASE WHEN q.action_id = :busy THEN 8 ELSE q.id % 3 END AS active,
           CASE WHEN q.action_id = :busy THEN 2 WHEN q.id % 10 = 0 THEN 1 ELSE 0 END
               AS retrying,
           CASE WHEN q.action_id = :busy THEN :busy_recent ELSE 3 END AS recent,
           CASE WHEN q.action_id = :busy THEN 0.05 ELSE 20 END AS step,
           CASE WHEN q.action_id = :busy THEN 0.05 ELSE 90 END AS recent_step
    FROM queues q
), picked AS (
    SELECT t.*, e.id, row_number() OVER (PARTITION BY t.queue_id ORDER BY e.seq DESC) AS k
    FROM tail t CROSS JOIN LATERAL (
        SELECT id, seq FROM execution_state x WHERE x.queue_id = t.queue_id
        ORDER BY seq DESC LIMIT t.queued + t.active + t.retrying + t.recent
    ) e
), shaped AS (
    SELECT id, k,
           CASE WHEN k <= queued THEN 'queued'
                WHEN k <= queued + active AND busy AND k > queued + active - 2
                    THEN 'scheduled'
                WHEN k <= queued + active THEN 'running'
                WHEN k <= queued + active + retrying THEN 'retrying'
                ELSE 'succeeded' END AS status,
           now() - make_interval(secs => k * step) AS t,
           now() - make_interval(
               secs => (k - queued - active - retrying) * recent_step) AS done
    FROM picked
), asked AS (
    UPDATE execution_requests r SET enqueued_at = s.t FROM shaped s WHERE r.id = s.id
)
UPDATE execution_state e SET
    status = s.status,
    priority = CASE WHEN s.status = 'queued' AND e.id % 10 = 0 THEN 5 ELSE 0 END,
    attempt = CASE WHEN s.status = 'retrying' THEN 2 ELSE 1 END,
    queued_at = CASE WHEN s.status = 'retrying' THEN now() + interval '30 seconds'
                     ELSE s.t END,
    not_before = CASE WHEN s.status = 'retrying' THEN now() + interval '30 seconds' END,
    scheduled_at = CASE WHEN s.status IN ('scheduled', 'running') THEN s.t
                        WHEN s.status = 'succeeded' THEN s.done - interval '1 second'
                        END,
    published_at = CASE WHEN s.status IN ('scheduled', 'running') THEN s.t
                        WHEN s.status = 'succeeded' THEN s.done - interval '1 second'
                        END,
    started_at = CASE WHEN s.status = 'running' THEN s.t
                      WHEN s.status = 'succeeded' THEN s.done - interval '990 ms' END,
    lease_expires_at = CASE WHEN s.status = 'running'
                            THEN now() + interval '15 seconds' END,
    worker = CASE WHEN s.status IN ('running', 'succeeded')
                  THEN format('celery@bench%s/%s', e.id % 4, e.id % 8) END,
    finished_at = CASE WHEN s.status = 'succeeded' THEN s.done END,
    result = CASE WHEN s.status = 'succeeded' THEN '{"ok": true}'::jsonb END,
    error = NULL
FROM shaped s WHERE e.id = s.id

-- name: seed_attempts
-- Written in bulk with the history triggers off, then totalled once (migration 0005's
-- rebuild): the triggers would cost a minute here and give the same totals.
INSERT INTO attempts (execution_id, queue_id, attempt, outcome, queued_at,
                      scheduled_at, started_at, finished_at, worker, error)
SELECT id, queue_id, attempt,
       CASE WHEN status = 'succeeded' THEN 'succeeded'
            ELSE (ARRAY['failed', 'timed_out', 'worker_lost'])[id % 3 + 1] END,
       queued_at, scheduled_at, started_at, finished_at, worker, error
FROM executions WHERE status IN ('succeeded', 'dead')
UNION ALL
SELECT e.id, e.queue_id, k,
       (ARRAY['failed', 'timed_out', 'worker_lost'])[(e.id + k) % 3 + 1],
       e.enqueued_at + make_interval(secs => k - 1),
       e.enqueued_at + make_interval(secs => k - 1 + 0.01),
       e.enqueued_at + make_interval(secs => k - 1 + 0.013),
       e.enqueued_at + make_interval(secs => k - 1 + 0.2),
       format('celery@bench%s/%s', e.id % 4, k), 'ConnectionError: reset'
FROM executions e CROSS JOIN generate_series(1, e.attempt - 1) k
WHERE e.status IN ('succeeded', 'dead', 'retrying') AND e.attempt > 1

-- name: seed_counters
UPDATE queues q SET next_seq = s.last_seq, queue_length = s.queued,
    active_count = s.active, total_enqueued = s.n, total_completed = s.succeeded,
    total_failed = s.dead, total_cancelled = s.cancelled, total_expired = s.expired,
    last_updated = now()
FROM (
    SELECT queue_id, max(seq) AS last_seq, count(*) AS n,
           count(*) FILTER (WHERE status = 'queued') AS queued,
           count(*) FILTER (WHERE status IN ('scheduled', 'running')) AS active,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status IN ('failed', 'timed_out', 'dead')) AS dead,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE status = 'expired') AS expired
    FROM executions GROUP BY queue_id
) s WHERE s.queue_id = q.id

-- name: seed_samples
-- What the sweeper writes every 15 s: an hour of it.
INSERT INTO queue_samples (action_id, sampled_at, queue_length, active_count,
                           oldest_wait_s, completed)
SELECT l.action_id, now() - make_interval(secs => k * 15),
       greatest(l.queued + (k * 7 + l.action_id) % 11 - 5, 0), l.active,
       CASE WHEN l.queued > 0 THEN 30 + k % 60 END,
       greatest(l.completed - k * CASE WHEN l.action_id = :busy THEN 20 ELSE 1 END, 0)
FROM (SELECT action_id, sum(queue_length) AS queued, sum(active_count) AS active,
             sum(total_completed) AS completed
      FROM queues GROUP BY action_id) l
CROSS JOIN generate_series(0, 239) k

-- name: seed_events
INSERT INTO events (trigger, payload, received_at, processed_at)
SELECT 'monitoring.alert',
       jsonb_build_object('host', 'db' || (g % 5 + 1),
                          'severity', (ARRAY['low', 'high', 'critical'])[g % 3 + 1]),
       now() - make_interval(secs => (:events - g) * 10),
       now() - make_interval(secs => (:events - g) * 10 - 0.05)
FROM generate_series(1, :events) g

-- name: seed_enforcements
INSERT INTO enforcements (event_id, rule_ref, status, reason, execution_id, created_at)
SELECT ev.id, 'pack00.on_alert',
       CASE WHEN ev.id % 20 = 0 THEN 'rejected' WHEN ev.id % 7 = 0 THEN 'skipped'
            ELSE 'executed' END,
       CASE WHEN ev.id % 20 = 0 THEN 'QueueFull: the line is full' END,
       CASE WHEN ev.id % 20 <> 0 AND ev.id % 7 <> 0
            THEN (SELECT min(id) FROM executions) + ev.id * 197 % :n END,
       ev.processed_at
FROM events ev

-- name: seed_busy_action
-- The busy action: the one with a tenth of the history and the long waiting line.
SELECT min(id) FROM actions WHERE name = 'action0000'

-- name: attempts_triggers_off
ALTER TABLE attempts DISABLE TRIGGER USER

-- name: attempts_triggers_on
ALTER TABLE attempts ENABLE TRIGGER USER

-- name: attempt_totals_rebuild
SELECT usher_attempt_totals_rebuild()

-- name: vacuum_analyze
-- After seeding, as autovacuum would: statistics and a visibility map for the planner.
VACUUM ANALYZE

-- name: seeded_counts
-- What the seeding made, table by table.
SELECT (SELECT count(*) FROM actions) AS actions,
       (SELECT count(*) FROM queues) AS queues,
       (SELECT count(*) FROM executions) AS executions,
       (SELECT count(*) FROM attempts) AS attempts,
       (SELECT count(*) FROM queue_samples) AS queue_samples

-- name: busy_action_ref
-- The action with the most history.
SELECT a.ref FROM actions a JOIN queues q ON q.action_id = a.id
GROUP BY a.ref ORDER BY sum(q.total_enqueued) DESC, a.ref LIMIT 1

-- name: partitioned_action_ref
-- The first action with more than one line.
SELECT a.ref FROM actions a JOIN queues q ON q.action_id = a.id
GROUP BY a.ref HAVING count(*) > 1 ORDER BY a.ref LIMIT 1

-- name: samples_to_now
-- The seeded hour of chart samples moved up to now, so that the overview reads them.
UPDATE queue_samples
SET sampled_at = sampled_at + (now() - (SELECT max(sampled_at) FROM queue_samples))

-- name: vacuum_analyze_samples
VACUUM ANALYZE queue_samples

-- name: drop_bench_token
-- The token of an earlier measurement of the same database.
DELETE FROM api_tokens WHERE name = 'bench-web'

-- name: planner_setting
-- A planner setting (e.g. enable_seqscan off) for the rest of the transaction only.
SELECT set_config(:name, :value, true)

-- name: soak_tables
-- The history tables' rows, sizes (with indexes and TOAST) and dead tuples: what retention
-- keeps flat (usher bench --retention).
SELECT c.relname AS name,
       (xpath('/row/n/text()',
              query_to_xml(format('SELECT count(*) AS n FROM %I', c.relname), false, true, '')
       ))[1]::text::bigint AS rows,
       pg_total_relation_size(c.oid) AS bytes,
       coalesce(s.n_dead_tup, 0) AS dead,
       coalesce(s.autovacuum_count, 0) + coalesce(s.vacuum_count, 0) AS vacuums
FROM pg_class c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind = 'r' AND c.relname = ANY(:tables)
  AND c.relnamespace = CAST(current_schema() AS regnamespace)
ORDER BY array_position(CAST(:tables AS text[]), CAST(c.relname AS text))

-- name: soak_totals
-- The lines' counters (never pruned): what was asked for and what ran, since the start.
SELECT coalesce(sum(total_enqueued), 0) AS enqueued, coalesce(sum(total_completed), 0) AS completed
FROM queues

-- name: soak_waits
-- Request -> start of what started in the last :window seconds, in ms.
SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY w), 0) AS p50,
       coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY w), 0) AS p99
FROM (SELECT extract(epoch FROM started_at - enqueued_at) * 1000 AS w FROM executions
      WHERE started_at > clock_timestamp() - make_interval(secs => :window)) s

-- name: soak_oldest
-- How long ago the oldest execution still kept finished: retention holds it near 60 s.
SELECT coalesce(extract(epoch FROM clock_timestamp() - min(finished_at)), 0) AS age_s
FROM executions WHERE finished_at IS NOT NULL

-- name: intake_http_executions
SELECT count(*) FROM executions

-- name: intake_http_events
SELECT count(*) FROM events
