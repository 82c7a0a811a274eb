-- The policies' statements that are not a line's (those are in lines.sql): recovery (what
-- the sweeper looks for), the dead-letter queue, events, the ETA, actions, rate limits and
-- intake.

-- name: expired_leases
-- Running executions whose worker stopped renewing the lease, the longest expired first.
SELECT id, attempt FROM executions
WHERE status = 'running' AND lease_expires_at < clock_timestamp()
ORDER BY lease_expires_at LIMIT :limit

-- name: republish_unclaimed
-- Scheduled executions whose message no worker claimed in time, marked republished now so
-- each is sent again at most once per that many seconds. SKIP LOCKED: one that a worker is
-- claiming (or another sweeper republishing) is left to it.
UPDATE executions e SET published_at = clock_timestamp()
FROM actions a
WHERE e.id IN (
    SELECT id FROM executions
    WHERE status = 'scheduled'
      AND published_at < clock_timestamp() - make_interval(secs => :s)
    ORDER BY published_at LIMIT :limit
    FOR UPDATE SKIP LOCKED
) AND a.id = e.action_id
RETURNING e.id, e.attempt, a.ref, a.timeout_s

-- name: lines_to_tend
-- Lines with work waiting: queued executions (timeouts, raised limits) or due retries.
SELECT id FROM queues WHERE queue_length > 0
UNION
SELECT DISTINCT queue_id FROM executions
WHERE status = 'retrying' AND not_before <= clock_timestamp()

-- name: unprocessed_events
-- Events stored but not processed in time. Events that failed for good are not taken (they
-- wait for a replay), so a poison event holds back the recovery of the others only for its
-- few tries.
SELECT id FROM events
WHERE processed_at IS NULL AND failed_at IS NULL
  AND received_at < clock_timestamp() - make_interval(secs => :s)
ORDER BY id LIMIT :limit

-- name: action_refs
SELECT ref FROM actions ORDER BY ref

-- name: samples_without_jit
-- Run before sample_lines, in its transaction. The planner prices the oldest-waiting probes
-- far above jit_above_cost: compiling took ~300 ms more than running.
SET LOCAL jit = off

-- name: sample_lines
-- Each action's depth, active count and oldest wait, at most once per SAMPLE_EVERY_S
-- whichever sweeper runs. Each line's oldest waiting execution is one index probe per
-- priority (the lateral join); reading all of an action's waiting executions took ~1.2 s
-- per round at 1,000 actions.
-- A line's oldest waiting execution is its lowest seq (seq is taken under the line's lock,
-- with enqueued_at read under the same lock, so both grow together). The waiting index is
-- (queue_id, priority DESC, seq): one probe per distinct priority finds it, where
-- min(enqueued_at) would read every waiting row of the line.
INSERT INTO queue_samples (action_id, sampled_at, queue_length, active_count,
                           oldest_wait_s, completed)
SELECT a.id, now(), coalesce(sum(q.queue_length), 0), coalesce(sum(q.active_count), 0),
       extract(epoch FROM now() - min(oldest.oldest_enqueued_at)),
       coalesce(sum(q.total_completed), 0)
FROM actions a LEFT JOIN queues q ON q.action_id = a.id
LEFT JOIN LATERAL (
    WITH RECURSIVE prios(p) AS (
        (SELECT priority FROM executions
         WHERE queue_id = q.id AND status = 'queued' ORDER BY priority DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT priority FROM executions
                WHERE queue_id = q.id AND status = 'queued' AND priority < prios.p
                ORDER BY priority DESC LIMIT 1)
        FROM prios WHERE prios.p IS NOT NULL
    )
    SELECT min(w.enqueued_at) AS oldest_enqueued_at FROM prios
    CROSS JOIN LATERAL (
        SELECT enqueued_at FROM executions
        WHERE queue_id = q.id AND status = 'queued' AND priority = prios.p
        ORDER BY seq LIMIT 1
    ) w
) oldest ON true
WHERE NOT EXISTS (
    SELECT 1 FROM queue_samples s
    WHERE s.sampled_at > now() - make_interval(secs => :every))
GROUP BY a.id
RETURNING id

-- name: prune_samples
-- Samples past SAMPLES_KEPT_H hours are dropped (run only by the sweeper that took a sample).
DELETE FROM queue_samples WHERE sampled_at < now() - make_interval(hours => :h)

-- name: running_on
-- The executions a worker node runs now: its workers are named node/... (the caller escapes
-- the node name for LIKE).
SELECT id, attempt FROM executions
WHERE status = 'running' AND worker LIKE :prefix ORDER BY id
