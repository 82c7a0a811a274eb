-- The web's own reads: the dashboard's pages (web/views_data.py) and /metrics (web/metrics.py).
-- Every dashboard list is one page (LIMIT + keyset), never a table: lines, waiting rows and
-- events are read through indexes that bound the work by the page size, so a page costs the
-- same at a thousand executions and at millions. A cursor or filter that is NULL folds away
-- when the statement is planned for its values.
-- Parameters are named in these comments without their colon: SQLAlchemy reads the text
-- whole, comments too, and would take a colon-name there for a parameter.

-- name: dashboard_lines
-- One page of lines (an action, or one partition of it) ordered by (ref, partition), each
-- with its action's policies and whether the action is paused;
-- after_ref and after_key are the last (ref, partition) of the previous page (after_ref NULL
-- for the first). The page is cut in the inner query and the oldest waiting execution
-- (usher_oldest_queued: one index probe per priority) is read once per line of the page;
-- the outer query only adds the wait to it.
SELECT l.action_id, l.action_ref, l.partition, l.queue_id, l.queue_length, l.active_count,
       l.total_enqueued, l.total_completed, l.total_failed, l.total_cancelled,
       l.total_expired, l.last_updated, l.oldest_enqueued_at,
       extract(epoch FROM clock_timestamp() - l.oldest_enqueued_at) AS oldest_wait_s,
       l.action_policy, l.pack_policy, l.paused
FROM (
    SELECT a.id AS action_id, a.ref AS action_ref, coalesce(q.partition_key, '') AS partition,
           q.id AS queue_id, coalesce(q.queue_length, 0) AS queue_length,
           coalesce(q.active_count, 0) AS active_count,
           coalesce(q.total_enqueued, 0) AS total_enqueued,
           coalesce(q.total_completed, 0) AS total_completed,
           coalesce(q.total_failed, 0) AS total_failed,
           coalesce(q.total_cancelled, 0) AS total_cancelled,
           coalesce(q.total_expired, 0) AS total_expired, q.last_updated,
           usher_oldest_queued(q.id) AS oldest_enqueued_at,
           a.policy AS action_policy, p.policy AS pack_policy,
           a.paused_at IS NOT NULL AS paused
    FROM actions a JOIN packs p ON p.id = a.pack_id
    LEFT JOIN queues q ON q.action_id = a.id
    WHERE (:search = '' OR strpos(lower(a.ref), lower(:search)) > 0)
      AND (CAST(:after_ref AS text) IS NULL
           OR (a.ref, coalesce(q.partition_key, '')) > (:after_ref, :after_key))
    ORDER BY a.ref, coalesce(q.partition_key, '')
    LIMIT :limit
) l
ORDER BY l.action_ref, l.partition

-- name: dashboard_action_lines
-- One page of an action's lines by partition (one line when it is not partitioned);
-- after is the previous page's last partition, key picks the one line of that partition.
-- The oldest waiting execution as in dashboard_lines: once per line of the page.
SELECT l.action_id, l.action_ref, l.partition, l.queue_id, l.queue_length, l.active_count,
       l.total_enqueued, l.total_completed, l.total_failed, l.total_cancelled,
       l.total_expired, l.last_updated, l.oldest_enqueued_at,
       extract(epoch FROM clock_timestamp() - l.oldest_enqueued_at) AS oldest_wait_s,
       l.action_policy, l.pack_policy, l.paused
FROM (
    SELECT a.id AS action_id, a.ref AS action_ref, coalesce(q.partition_key, '') AS partition,
           q.id AS queue_id, coalesce(q.queue_length, 0) AS queue_length,
           coalesce(q.active_count, 0) AS active_count,
           coalesce(q.total_enqueued, 0) AS total_enqueued,
           coalesce(q.total_completed, 0) AS total_completed,
           coalesce(q.total_failed, 0) AS total_failed,
           coalesce(q.total_cancelled, 0) AS total_cancelled,
           coalesce(q.total_expired, 0) AS total_expired, q.last_updated,
           usher_oldest_queued(q.id) AS oldest_enqueued_at,
           a.policy AS action_policy, p.policy AS pack_policy,
           a.paused_at IS NOT NULL AS paused
    FROM actions a JOIN packs p ON p.id = a.pack_id
    LEFT JOIN queues q ON q.action_id = a.id
    WHERE a.id = :action_id
      AND (CAST(:after AS text) IS NULL OR coalesce(q.partition_key, '') > :after)
      AND (CAST(:key AS text) IS NULL OR coalesce(q.partition_key, '') = :key)
    ORDER BY coalesce(q.partition_key, '') LIMIT :limit
) l
ORDER BY l.partition

-- name: dashboard_action_totals
-- The action's counters summed over all its lines (one row per line: cheap).
SELECT count(q.id) AS lines,
       coalesce(sum(q.queue_length), 0) AS queue_length,
       coalesce(sum(q.active_count), 0) AS active_count,
       coalesce(sum(q.total_enqueued), 0) AS total_enqueued,
       coalesce(sum(q.total_completed), 0) AS total_completed,
       coalesce(sum(q.total_failed), 0) AS total_failed,
       coalesce(sum(q.total_cancelled), 0) AS total_cancelled,
       coalesce(sum(q.total_expired), 0) AS total_expired
FROM queues q WHERE q.action_id = :action_id

-- name: dashboard_summary
-- Totals over every line, plus the dead-letter queue (a partial index counts it).
SELECT (SELECT count(*) FROM actions) AS actions,
       (SELECT count(*) FROM queues) AS lines,
       (SELECT coalesce(sum(queue_length), 0) FROM queues) AS queued,
       (SELECT coalesce(sum(active_count), 0) FROM queues) AS active,
       (SELECT count(*) FROM execution_state e
        WHERE e.status = 'dead' AND e.dlq_cleared_at IS NULL) AS dlq

-- name: dashboard_action_id
SELECT id FROM actions WHERE ref = :ref

-- name: dashboard_waiting
-- One page of a line's waiting executions in grant order (priority DESC, seq), on the
-- waiting index; priority and seq are the previous page's last row (priority NULL for the
-- first).
SELECT id, priority, seq, attempt, usher_capped_json(parameters) AS parameters,
       enqueued_at, queued_at,
       extract(epoch FROM clock_timestamp() - coalesce(queued_at, enqueued_at)) AS waited_s
FROM executions
WHERE queue_id = :queue_id AND status = 'queued'
  AND (CAST(:priority AS integer) IS NULL OR priority < :priority
       OR (priority = :priority AND seq > :seq))
ORDER BY priority DESC, seq LIMIT :limit

-- name: dashboard_action_executions
-- One page of an action's executions, newest first; before is the previous page's last id.
-- The LATERAL makes the action id a run-time parameter, so Postgres walks the
-- (action_id, id DESC) index; with a literal id it may walk the whole primary key
-- backwards when the action's executions are all old.
SELECT e.id, e.status, e.priority, e.seq, e.attempt,
       usher_capped_json(e.parameters) AS parameters, e.enqueued_at,
       e.started_at, e.finished_at, e.worker, usher_capped_text(e.error) AS error,
       q.partition_key
FROM actions a CROSS JOIN LATERAL (
    SELECT * FROM executions x
    WHERE x.action_id = a.id AND (CAST(:before AS bigint) IS NULL OR x.id < :before)
    ORDER BY x.id DESC LIMIT :limit
) e JOIN queues q ON q.id = e.queue_id
WHERE a.id = :action_id
ORDER BY e.id DESC

-- name: dashboard_samples
-- The sweeper's samples of one action over the window (at most one per 15 s).
SELECT extract(epoch FROM sampled_at - now()) AS age_s,
       queue_length, active_count, oldest_wait_s
FROM queue_samples
WHERE action_id = :action_id
  AND sampled_at > now() - make_interval(secs => :window)
ORDER BY sampled_at

-- name: dashboard_sparklines
-- Queue depth per action over the window, the highest sample of each minute (one row per
-- action: the page's 50 actions x 60 minutes stay in Postgres).
SELECT action_id, array_agg(age_s ORDER BY at) AS ages,
       array_agg(depth ORDER BY at) AS depths
FROM (
    SELECT action_id, max(sampled_at) AS at, max(queue_length) AS depth,
           CAST(extract(epoch FROM max(sampled_at) - now()) AS float8) AS age_s
    FROM queue_samples
    WHERE action_id = ANY(:ids)
      AND sampled_at > now() - make_interval(secs => :window)
    GROUP BY action_id, date_trunc('minute', sampled_at)
) minutes
GROUP BY action_id

-- name: dashboard_throughput_sampled
-- Succeeded executions over the window from the samples' cumulative ``completed``, per
-- action; the caller takes it when the samples span at least a minute.
SELECT action_id, max(completed) - min(completed) AS done,
       extract(epoch FROM max(sampled_at) - min(sampled_at)) AS span
FROM queue_samples
WHERE action_id = ANY(:ids) AND sampled_at > now() - make_interval(secs => :window)
GROUP BY action_id

-- name: dashboard_throughput_recent
-- Else succeeded executions over the window among the action's latest 1,000 (a bounded read
-- of the (action_id, id DESC) index).
SELECT a.id, (
    SELECT count(*) FROM (
        SELECT status, finished_at FROM executions
        WHERE action_id = a.id ORDER BY id DESC LIMIT 1000
    ) r
    WHERE r.status = 'succeeded'
      AND r.finished_at > clock_timestamp() - make_interval(secs => :window)
) AS done
FROM unnest(CAST(:ids AS integer[])) AS a(id)

-- name: dashboard_execution_extra
-- What the execution page shows beyond execution_by_id: the current attempt's own start in
-- line, and the line's key.
SELECT e.queued_at, e.not_before, e.holds_slot, e.lease_expires_at,
       e.dlq_cleared_at, q.partition_key
FROM executions e JOIN queues q ON q.id = e.queue_id WHERE e.id = :id

-- name: dashboard_events
-- One page of events, newest first; before is the previous page's last id.
SELECT id, trigger, usher_capped_json(payload) AS payload, received_at,
       processed_at, failed_at, failures, usher_capped_text(error) AS error
FROM events
WHERE CAST(:before AS bigint) IS NULL OR id < :before
ORDER BY id DESC LIMIT :limit

-- name: dashboard_enforcements
-- The enforcements of a page of events (their unique key leads with event_id).
SELECT f.event_id, f.id, f.rule_ref, f.status, f.reason, f.execution_id,
       e.status AS execution_status
FROM enforcements f LEFT JOIN executions e ON e.id = f.execution_id
WHERE f.event_id = ANY(:ids) ORDER BY f.event_id, f.id

-- name: dashboard_schedule_fires
-- Each schedule's latest fired tick, its event and, for an action schedule, the enforcement
-- recorded under the schedule's ref and the execution it made. The LATERAL walks the primary
-- key (schedule_id, fire_at) backwards: one probe per schedule, however many ticks it fired.
SELECT s.ref, f.fire_at, f.fired_at, f.event_id, n.status AS enforcement,
       usher_capped_text(n.reason) AS reason, n.execution_id, x.status AS execution_status
FROM schedules s
CROSS JOIN LATERAL (
    SELECT fire_at, fired_at, event_id FROM schedule_fires
    WHERE schedule_id = s.id ORDER BY fire_at DESC LIMIT 1
) f
LEFT JOIN enforcements n ON n.event_id = f.event_id AND n.rule_ref = s.ref
LEFT JOIN executions x ON x.id = n.execution_id

-- name: metrics_lines
-- Each action's counters summed over its lines; an action never used yet has NULL sums.
SELECT a.ref AS action, sum(q.total_enqueued) AS enqueued,
       sum(q.total_completed) AS succeeded, sum(q.total_failed) AS dead,
       sum(q.total_cancelled) AS cancelled, sum(q.total_expired) AS expired,
       sum(q.queue_length) AS depth, sum(q.active_count) AS active
FROM actions a LEFT JOIN queues q ON q.action_id = a.id
GROUP BY a.ref ORDER BY a.ref

-- name: metrics_dlq
-- A partial index holds exactly these rows.
SELECT count(*) FROM execution_state WHERE status = 'dead' AND dlq_cleared_at IS NULL

-- name: metrics_totals
-- One row per line and outcome (kept by triggers on attempts, migration 0005): a scrape costs
-- the same at a thousand attempts and at millions.
SELECT a.ref AS action, a.runner, t.outcome, t.attempts, t.retries, t.run_sum, t.wait_sum,
       t.run_hist, t.wait_hist
FROM attempt_totals t JOIN queues q ON q.id = t.queue_id JOIN actions a ON a.id = q.action_id

-- name: metrics_running_waits
-- The running attempts' waits are not in the history yet (at most the sum of the limits).
-- One row per action and bucket: usher_bucket (migration 0005, as for the history) is the
-- 1-based bucket of the first bound the wait does not exceed, one past the last bound for
-- a wait above every bound, two past it for a wait that is NULL. The bounds are
-- web.metrics.WAIT_BUCKETS, as the numerics they are written as (WAIT_BOUNDS).
SELECT action, runner, usher_bucket(v, CAST(:bounds AS numeric[])) AS bucket,
       count(*) AS n, coalesce(sum(v), 0) AS total
FROM (
    SELECT a.ref AS action, '' AS runner, extract(epoch FROM e.started_at - e.queued_at) AS v
    FROM execution_state e JOIN queues q ON q.id = e.queue_id JOIN actions a ON a.id = q.action_id
    WHERE e.status = 'running' AND e.queued_at IS NOT NULL
) s
GROUP BY action, runner, bucket
