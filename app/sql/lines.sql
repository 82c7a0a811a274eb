-- A line's statements (policies.lines, policies.admission, policies.control,
-- policies.limits). The line's lock is always taken before any execution row of the line is
-- changed; FOR NO KEY UPDATE, because plain FOR UPDATE would conflict with the KEY SHARE
-- lock an execution INSERT's foreign key takes.

-- name: count_lines
-- Add to the counters of several lines at once; the amounts travel as one JSON document,
-- cheaper to encode and to parse than one array per counter.
UPDATE queues q SET
    next_seq = q.next_seq + c.next_seq,
    queue_length = q.queue_length + c.queue_length,
    active_count = q.active_count + c.active_count,
    total_enqueued = q.total_enqueued + c.total_enqueued,
    total_cancelled = q.total_cancelled + c.total_cancelled,
    total_expired = q.total_expired + c.total_expired,
    last_updated = clock_timestamp()
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
    AS c(id integer, next_seq bigint, queue_length integer, active_count integer,
         total_enqueued bigint, total_cancelled bigint, total_expired bigint)
WHERE q.id = c.id

-- name: lock_line
-- The policies as text: parsed once per distinct text (policies.policy.parse).
SELECT q.id AS queue_id, a.ref, a.timeout_s, CAST(a.policy AS text) AS action_policy,
       CAST(p.policy AS text) AS pack_policy, a.paused_at IS NOT NULL AS paused, q.level_group
FROM queues q JOIN actions a ON a.id = q.action_id JOIN packs p ON p.id = a.pack_id
WHERE q.id = :queue_id
FOR NO KEY UPDATE OF q

-- name: lock_line_of
SELECT q.id AS queue_id, a.ref, a.timeout_s, CAST(a.policy AS text) AS action_policy,
       CAST(p.policy AS text) AS pack_policy, a.paused_at IS NOT NULL AS paused, q.level_group
FROM execution_state e JOIN queues q ON q.id = e.queue_id
JOIN actions a ON a.id = q.action_id JOIN packs p ON p.id = a.pack_id
WHERE e.id = :execution_id
FOR NO KEY UPDATE OF q

-- name: lock_lines
-- Create-or-lock every line at once, in the order given; the rows as they are under the lock.
-- A new line is in its action's level group from the start.
INSERT INTO queues AS q (action_id, partition_key, level_group)
SELECT u.a, u.k, (SELECT level_group FROM actions WHERE id = u.a)
FROM unnest(CAST(:actions AS integer[]), CAST(:keys AS text[])) AS u(a, k)
ON CONFLICT (action_id, partition_key) DO UPDATE SET last_updated = q.last_updated
RETURNING q.id, q.action_id, q.partition_key, q.next_seq, q.queue_length, q.level_group

-- name: admit
SELECT execution_id, attempt FROM usher_admit(:queue_id, :limit, :cap)

-- name: requeue_due
-- A retry that kept its slot is granted at once; the others wait again with their seq.
WITH now AS (SELECT clock_timestamp() AS ts)
UPDATE execution_state SET
    status = CASE WHEN holds_slot THEN 'scheduled' ELSE 'queued' END,
    scheduled_at = CASE WHEN holds_slot THEN (SELECT ts FROM now) END,
    published_at = CASE WHEN holds_slot THEN (SELECT ts FROM now) END,
    holds_slot = false
WHERE queue_id = :queue_id AND status = 'retrying'
  AND not_before <= (SELECT ts FROM now)
RETURNING id, attempt, priority, seq, status

-- name: expire
-- The wait counts from when the execution joined the line (queued_at: for a retry back in
-- line, the end of its backoff).
UPDATE execution_state e SET status = 'expired', finished_at = clock_timestamp(),
    error = 'waited longer than queue_timeout_s'
FROM execution_requests r
WHERE e.queue_id = :queue_id AND e.status = 'queued' AND r.id = e.id
  AND coalesce(e.queued_at, r.enqueued_at) < clock_timestamp() - make_interval(secs => :timeout)
RETURNING e.id

-- name: claim
-- The workers' fast path (app.db.Hot, psycopg placeholders). Also true when this very
-- process already claimed it: a claim whose reply was lost with its connection is run again.
UPDATE execution_state e SET status = 'running', started_at = clock_timestamp(),
    worker = %(worker)s,
    lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_s)s)
FROM execution_requests r JOIN actions a ON a.id = r.action_id
WHERE e.id = %(id)s AND e.attempt = %(attempt)s
  AND (e.status = 'scheduled' OR (e.status = 'running' AND e.worker = %(worker)s))
  AND r.id = e.id
RETURNING e.id, e.attempt, r.parameters, a.ref, a.runner, a.runner_config, a.timeout_s,
          a.parameters_schema

-- name: renew
-- The workers' fast path: the leases of several running attempts in one statement.
UPDATE execution_state e
SET lease_expires_at = clock_timestamp() + make_interval(secs => %(s)s)
FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(attempts)s AS integer[])) AS h(id, attempt)
WHERE e.id = h.id AND e.attempt = h.attempt AND e.status = 'running'
RETURNING e.id, e.attempt

-- name: finish
-- The workers' fast path: release and admit in one round trip (app/sql/functions.sql).
-- emitted: the execution events this statement made (policies/emitted.py); the function
-- runs whole before the select list is evaluated.
SELECT kind, queue_id, action_ref, timeout_s, grant_ids, grant_attempts,
       current_setting('usher.emitted', true) AS emitted
FROM usher_finish(%(id)s, %(attempt)s, %(status)s, CAST(%(result)s AS jsonb),
                  %(error)s, %(limit)s)

-- name: release
SELECT queue_id, not_before, current_setting('usher.emitted', true) AS emitted
FROM usher_release(
    :id, :attempt, :status, :outcome, :hold, :delay_s, CAST(:result AS jsonb),
    :error, :lease_expired)

-- name: emitted_events
-- The execution events this transaction emitted so far (policies/emitted.py).
SELECT current_setting('usher.emitted', true) AS emitted

-- name: lock_execution
SELECT status, holds_slot FROM execution_state WHERE id = :id FOR UPDATE

-- name: cancel_execution
-- The slots it held at its levels are freed (the snapshot from before the UPDATE), after
-- its line: the caller holds the group's lock.
WITH freed AS (
    UPDATE levels l SET active = l.active - 1, last_updated = clock_timestamp()
    FROM execution_state e WHERE e.id = :id AND l.id = ANY(e.levels)
)
UPDATE execution_state SET status = 'cancelled', finished_at = clock_timestamp(),
    lease_expires_at = NULL, holds_slot = false, error = :reason, levels = '{}',
    cancelled_by = CAST(:by AS text)
WHERE id = :id

-- name: position
-- 1-based place in the line of a queued execution; NULL once it left the line.
SELECT CASE WHEN e.status = 'queued' THEN (
    SELECT count(*) FROM execution_state w
    WHERE w.queue_id = e.queue_id AND w.status = 'queued'
      AND (w.priority > e.priority OR (w.priority = e.priority AND w.seq <= e.seq))
) END
FROM execution_state e WHERE e.id = :id

-- name: positions
-- The 1-based places of those of :ids still queued (NULL for the others), without counting
-- the line ahead of each: when every waiting execution of the line has its priority (two
-- index probes: none higher, none lower), its place is the line's queue_length less those
-- waiting behind it (a range of the waiting index from its seq: the few that came later).
-- Only a line of mixed priorities counts the ones ahead. queue_length and the rows are read
-- in one snapshot, so the two agree.
SELECT e.id,
       CASE
           WHEN e.status <> 'queued' THEN NULL
           WHEN NOT EXISTS (SELECT 1 FROM execution_state o WHERE o.queue_id = e.queue_id
                            AND o.status = 'queued' AND o.priority > e.priority)
            AND NOT EXISTS (SELECT 1 FROM execution_state o WHERE o.queue_id = e.queue_id
                            AND o.status = 'queued' AND o.priority < e.priority)
           THEN q.queue_length - (
               SELECT count(*) FROM execution_state b
               WHERE b.queue_id = e.queue_id AND b.status = 'queued'
                 AND b.priority = e.priority AND b.seq > e.seq)
           ELSE (
               SELECT count(*) FROM execution_state w
               WHERE w.queue_id = e.queue_id AND w.status = 'queued'
                 AND (w.priority > e.priority OR (w.priority = e.priority AND w.seq <= e.seq)))
       END AS place
FROM execution_state e
JOIN queues q ON q.id = e.queue_id
WHERE e.id = ANY(:ids)

-- name: lock_action
-- Against other live changes. FOR NO KEY UPDATE, as for a line: FOR UPDATE would also block
-- the KEY SHARE lock an execution INSERT's foreign key takes, and an enqueue holding the
-- line would deadlock with the re-admission that follows (it waits for that line while
-- holding the action).
SELECT id FROM actions WHERE ref = :ref FOR NO KEY UPDATE

-- name: action_lines
SELECT id, partition_key FROM queues WHERE action_id = :a

-- name: action_line_ids
-- The lines of an action by its ref (one, when :k names a partition), in the partition-key
-- order every multi-line transaction locks them in.
SELECT q.id, q.partition_key FROM queues q JOIN actions a ON a.id = q.action_id
WHERE a.ref = :ref AND (CAST(:k AS text) IS NULL OR q.partition_key = CAST(:k AS text))
ORDER BY q.partition_key

-- name: line_id
SELECT id FROM queues WHERE action_id = :a AND partition_key = :k

-- name: set_paused
UPDATE actions SET paused_at = CASE WHEN :paused THEN coalesce(paused_at, now()) END,
    updated_at = now()
WHERE id = :id

-- name: merge_action_policy
-- Until the next pack load, which writes policy from the files and clears live_policy.
UPDATE actions SET policy = policy || CAST(:changes AS jsonb),
    live_policy = live_policy || CAST(:changes AS jsonb), updated_at = now()
WHERE id = :id

-- name: action_policies
-- The policies of a pack's actions, or of one action, as text (parsed once per text).
SELECT a.id, CAST(a.policy AS text) AS action_policy, CAST(p.policy AS text) AS pack_policy
FROM actions a JOIN packs p ON p.id = a.pack_id
WHERE (CAST(:pack_id AS integer) IS NULL OR a.pack_id = :pack_id)
  AND (CAST(:action_id AS integer) IS NULL OR a.id = :action_id)
ORDER BY a.id

-- name: store_resolved_limits
-- rate_limited_since: grants made while it was not rate-limited went unrecorded, so its
-- lines fill their grant record again from history (policies.ratelimit).
UPDATE actions a SET resolved_concurrency = r.concurrency, resolved_rate_limited = r.rate_limited,
    rate_limited_since = CASE WHEN r.rate_limited AND NOT a.resolved_rate_limited
        THEN clock_timestamp() ELSE a.rate_limited_since END
FROM unnest(CAST(:ids AS integer[]), CAST(:concurrency AS integer[]),
            CAST(:rate_limited AS boolean[])) AS r(id, concurrency, rate_limited)
WHERE a.id = r.id
