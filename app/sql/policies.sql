-- The policies' statements that are not a line's (those are in lines.sql): recovery (what
-- the sweeper looks for), the dead-letter queue, events, the ETA, actions, rate limits and
-- intake.

-- name: expired_leases
-- Running executions whose worker stopped renewing the lease, the longest expired first.
SELECT id, attempt FROM execution_state
WHERE status = 'running' AND lease_expires_at < clock_timestamp()
ORDER BY lease_expires_at LIMIT :limit

-- name: republish_unclaimed
-- Scheduled executions whose message no worker claimed in time, marked republished now so
-- each is sent again at most once per that many seconds. SKIP LOCKED: one that a worker is
-- claiming (or another sweeper republishing) is left to it.
UPDATE execution_state e SET published_at = clock_timestamp()
FROM execution_requests r JOIN actions a ON a.id = r.action_id
WHERE e.id IN (
    SELECT id FROM execution_state
    WHERE status = 'scheduled'
      AND published_at < clock_timestamp() - make_interval(secs => :s)
    ORDER BY published_at LIMIT :limit
    FOR UPDATE SKIP LOCKED
) AND r.id = e.id
RETURNING e.id, e.attempt, a.ref, a.timeout_s

-- name: lines_to_tend
-- Lines with work waiting: queued executions (timeouts, raised limits) or due retries.
SELECT id FROM queues WHERE queue_length > 0
UNION
SELECT DISTINCT queue_id FROM execution_state
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

-- name: sample_lines
-- Each action's depth, active count and oldest wait, at most once per SAMPLE_EVERY_S
-- whichever sweeper runs. Each line's oldest waiting execution is usher_oldest_queued: one
-- index probe per priority; reading all of an action's waiting executions took ~1.2 s per
-- round at 1,000 actions.
INSERT INTO queue_samples (action_id, sampled_at, queue_length, active_count,
                           oldest_wait_s, completed)
SELECT a.id, now(), coalesce(sum(q.queue_length), 0), coalesce(sum(q.active_count), 0),
       extract(epoch FROM now() - min(usher_oldest_queued(q.id))),
       coalesce(sum(q.total_completed), 0)
FROM actions a LEFT JOIN queues q ON q.action_id = a.id
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
SELECT id, attempt FROM execution_state
WHERE status = 'running' AND worker LIKE :prefix ORDER BY id

-- name: dlq_items
-- The dead-letter queue, newest first: executions that ended dead and were not replayed or
-- purged. A big parameters or error value is shown capped (usher_capped_json and
-- usher_capped_text); before is the cursor (an id) of the next page, or NULL.
SELECT e.id, a.ref AS action_ref, usher_capped_json(e.parameters) AS parameters,
       e.priority, e.attempt, usher_capped_text(e.error) AS error,
       e.enqueued_at, e.finished_at, e.replay_of
FROM executions e JOIN actions a ON a.id = e.action_id
WHERE e.status = 'dead' AND e.dlq_cleared_at IS NULL
  AND (CAST(:before AS bigint) IS NULL OR e.id < :before)
ORDER BY e.id DESC LIMIT :limit

-- name: dlq_count
SELECT count(*) FROM execution_state e WHERE e.status = 'dead' AND e.dlq_cleared_at IS NULL

-- name: rerun_source
-- What a re-run repeats (policies.rerun): the execution's action, parameters and priority.
SELECT a.ref, e.parameters, e.priority
FROM executions e JOIN actions a ON a.id = e.action_id
WHERE e.id = :id

-- name: dlq_line_of
-- A replay's line, read without a lock: the lines are locked first, then the execution
-- (dlq_lock_dead).
SELECT e.parameters, a.ref, q.action_id, q.partition_key
FROM executions e JOIN queues q ON q.id = e.queue_id
JOIN actions a ON a.id = q.action_id
WHERE e.id = :id

-- name: dlq_lock_dead
-- Taken once the lines are locked, as everywhere: locking the execution first would
-- deadlock with a cancel of it (which holds the line, then wants the execution).
SELECT e.id, e.status, e.dlq_cleared_at, r.parameters, e.priority, a.ref
FROM execution_state e JOIN execution_requests r ON r.id = e.id
JOIN actions a ON a.id = r.action_id
WHERE e.id = :id FOR UPDATE OF e

-- name: dlq_clear
-- The replayed execution leaves the dead-letter queue.
UPDATE execution_state SET dlq_cleared_at = clock_timestamp() WHERE id = :id

-- name: dlq_ids
SELECT e.id FROM execution_state e
WHERE e.status = 'dead' AND e.dlq_cleared_at IS NULL
ORDER BY e.id

-- name: dlq_purge
-- Every item leaves the dead-letter queue; the executions and their history stay, marked
-- cleared.
UPDATE execution_state e SET dlq_cleared_at = clock_timestamp()
WHERE e.status = 'dead' AND e.dlq_cleared_at IS NULL
RETURNING e.id

-- name: execution_events_state
-- Before a pack load writes its rules: whether executions_emit is enabled now, and whether
-- an enabled rule of a pack not being loaded listens on usher.execution.
SELECT usher_execution_events_enabled() AS enabled,
       EXISTS (SELECT 1 FROM rules r JOIN packs p ON p.id = r.pack_id
               WHERE r.trigger = 'usher.execution' AND r.enabled
                 AND p.name <> ALL(CAST(:packs AS text[]))) AS others

-- name: lock_executions_for_trigger
-- The lock ALTER TABLE ... ENABLE TRIGGER takes, taken first: it waits for the writers of
-- executions in flight before this transaction holds any row they could wait on.
LOCK TABLE execution_state IN SHARE ROW EXCLUSIVE MODE

-- name: store_event
INSERT INTO events (trigger, payload) VALUES (:t, CAST(:p AS jsonb))
RETURNING id

-- name: store_events
-- Every event of a request in one statement; each event's id is taken beside its place in
-- the request (the rows travel as one JSON document), and the ids come back in that order.
WITH r AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('events', 'id')) AS id, r.n, r.t, r.p
    FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS (t text, p jsonb))
        WITH ORDINALITY AS r(t, p, n)
),
ins AS (INSERT INTO events (id, trigger, payload) SELECT id, t, p FROM r ORDER BY id)
SELECT array_agg(id ORDER BY n) FROM r

-- name: lock_events
-- The events are locked in id order; one another processor holds (a duplicate message, a
-- republished one) is skipped, not waited for: that processor enforces it, or leaves it
-- unprocessed for the sweeper. A wait would hold this try past its time limit and count it
-- as a failure of a healthy event.
SELECT id, trigger, payload, depth FROM events WHERE id = ANY(:ids)
ORDER BY id FOR UPDATE SKIP LOCKED

-- name: rules_of_triggers
-- KEY SHARE on the rules, in ref order, before any line: a pack load that deletes one of
-- them (and then re-admits lines) is waited for here, holding no line, and the deleted
-- rule is skipped; taken at the enforcement insert instead, it would deadlock with it.
SELECT id, ref, trigger, criteria, action_ref, parameters, priority, enabled
FROM rules WHERE trigger = ANY(:triggers) ORDER BY ref FOR KEY SHARE

-- name: enforced_rules
-- The (event, rule) pairs already enforced: each is enforced once.
SELECT event_id, rule_ref FROM enforcements WHERE event_id = ANY(:ids)

-- name: mark_events_processed
UPDATE events SET processed_at = clock_timestamp() WHERE id = ANY(:ids)

-- name: record_enforcements
-- Every enforcement of a batch in one statement, in (event, rule ref) order; the rows
-- travel as one JSON document.
INSERT INTO enforcements (event_id, rule_id, rule_ref, status, reason, execution_id)
SELECT r.e, r.r, r.f, r.s, r.w, r.x FROM jsonb_to_recordset(CAST(:rows AS jsonb))
    AS r(e bigint, r integer, f text, s text, w text, x bigint)
ORDER BY r.e, r.f
RETURNING id, event_id, rule_ref

-- name: enforcements_of_event
SELECT id, rule_ref AS rule, status, execution_id, reason, created_at
FROM enforcements WHERE event_id = :id ORDER BY id

-- name: record_event_failure
-- Count a try that did not finish; the one that makes USHER_EVENT_MAX_FAILURES ends the
-- event failed (kept with its error, replayable). A processed or already failed event is
-- left as it is.
UPDATE events SET failures = failures + 1, error = :error,
    failed_at = CASE WHEN failures + 1 >= :most THEN clock_timestamp() END
WHERE id = ANY(:ids) AND processed_at IS NULL AND failed_at IS NULL
RETURNING id, failed_at IS NOT NULL AS failed

-- name: replay_event
-- A failed event gets its tries back; any other is left as it is (no row).
UPDATE events SET failures = 0, failed_at = NULL, error = NULL
WHERE id = :id AND failed_at IS NOT NULL RETURNING id

-- name: event_state
SELECT processed_at, failures, failed_at, error FROM events WHERE id = :id

-- name: event_processed_at
SELECT processed_at FROM events WHERE id = :id

-- name: line_pace
-- Starts on the line over the last window seconds. Finished attempts carry their line
-- (attempts.queue_id): the (queue_id, started_at) index reads only the window, whatever the
-- line's history. Running executions are read through the partial index of active ones (at
-- most the sum of the limits): a cached generic plan would otherwise AND it with every
-- execution of a line of unknown size.
WITH running AS MATERIALIZED (
    SELECT queue_id, started_at FROM execution_state WHERE status = 'running'
)
SELECT count(*) AS started, min(s) AS first FROM (
    SELECT t.started_at AS s FROM attempts t
    WHERE t.queue_id = :queue_id AND t.started_at > now() - make_interval(secs => :window)
    UNION ALL
    SELECT x.started_at FROM running x
    WHERE x.queue_id = :queue_id AND x.started_at > now() - make_interval(secs => :window)
) recent

-- name: line_slots
-- What an estimate needs of a line: its limit as stored (NULL: the settings' default),
-- whether it is paused, how long its last 50 finished runs took on average (the
-- (queue_id, started_at) index of attempts reads only those), and when its running
-- executions started (read through the partial index of active ones, as line_pace does).
WITH running AS MATERIALIZED (
    SELECT queue_id, started_at FROM execution_state WHERE status = 'running'
)
SELECT a.resolved_concurrency, a.paused_at IS NOT NULL AS paused,
       (SELECT avg(extract(epoch FROM r.finished_at - r.started_at)) FROM (
            SELECT t.started_at, t.finished_at FROM attempts t
            WHERE t.queue_id = q.id AND t.started_at IS NOT NULL
            ORDER BY t.started_at DESC LIMIT 50) r) AS mean_run_s,
       ARRAY(SELECT x.started_at FROM running x
             WHERE x.queue_id = q.id AND x.started_at IS NOT NULL) AS running
FROM queues q JOIN actions a ON a.id = q.action_id
WHERE q.id = :queue_id

-- name: waiting_position
-- An execution's status, line and place in it (1 = next) in (priority DESC, seq) order.
SELECT e.status, e.queue_id, (
    SELECT count(*) FROM execution_state w
    WHERE w.queue_id = e.queue_id AND w.status = 'queued'
      AND (w.priority > e.priority OR (w.priority = e.priority AND w.seq <= e.seq))
) AS position
FROM execution_state e WHERE e.id = :id

-- name: find_actions
-- The policies as text: parsed once per distinct text (policies.policy.parse).
SELECT a.id, a.ref, a.runner, a.timeout_s, a.parameters_schema,
       CAST(a.policy AS text) AS action_policy,
       CAST(p.policy AS text) AS pack_policy,
       a.paused_at IS NOT NULL AS paused
FROM actions a JOIN packs p ON p.id = a.pack_id WHERE a.ref = ANY(:refs)

-- name: insert_executions
-- Every execution of an intake batch in one statement, in (line, seq) order. The rows
-- travel as one JSON document: cheaper to encode and to parse than one array per column.
-- h: the parameters' hash, for an action that coalesces (NULL otherwise); b: who asked;
-- o: the execution a re-run repeats. Each row's id and time are taken in (line, seq) order;
-- the request and its state are two rows (migration 0025), written by the same statement.
WITH batch AS MATERIALIZED (
    SELECT nextval('execution_requests_id_seq') AS id,
           clock_timestamp() AS ts, r.*
    FROM (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
              AS r(a integer, q integer, s bigint, p integer, d jsonb, r bigint, h bigint,
                   b text, o bigint)
          ORDER BY r.q, r.s OFFSET 0) r
),
requests AS (
    INSERT INTO execution_requests (id, action_id, queue_id, seq, parameters, enqueued_at,
                                    replay_of, requested_by, rerun_of)
    SELECT id, a, q, s, d, ts, r, b, o FROM batch ORDER BY id
)
INSERT INTO execution_state (id, queue_id, seq, priority, status, queued_at, params_hash)
SELECT id, q, s, p, 'queued', ts, h FROM batch ORDER BY id
RETURNING id, queue_id, seq
