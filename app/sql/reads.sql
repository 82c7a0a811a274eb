-- The read models that the CLI, the API and the dashboard share (app/queries.py).
-- A list shows parameters, results and errors through usher_capped_json/usher_capped_text
-- (migration 0008): a value of more than 4096 bytes (queries.LIST_VALUE_BYTES) stays in
-- Postgres and the list says how big it is; the one execution shows it whole.
-- Parameters are named in these comments without their colon: SQLAlchemy reads the text
-- whole, comments too, and would take a colon-name there for a parameter.

-- name: action_by_ref
-- One action with its pack's policy, for the API's and the dashboard's action pages.
SELECT a.ref, a.name, p.name AS pack, a.description, a.runner, a.timeout_s,
       a.parameters_schema AS parameters, a.policy, p.policy AS pack_policy,
       a.live_policy, a.paused_at IS NOT NULL AS paused
FROM actions a JOIN packs p ON p.id = a.pack_id WHERE a.ref = :ref

-- name: actions_by_ref
SELECT a.ref, a.name, p.name AS pack, a.description, a.runner, a.timeout_s,
       a.policy, p.policy AS pack_policy
FROM actions a JOIN packs p ON p.id = a.pack_id ORDER BY a.ref

-- name: jit_off_for_transaction
-- For the rest of the transaction: the caller says which of its reads the planner prices
-- high enough to JIT-compile, when compiling takes longer than running them.
SET LOCAL jit = off

-- name: line_stats
-- One row per line (action, partition) of every action; an action never used yet shows one
-- row with NULL counters (the LEFT JOIN). A line's oldest waiting execution is
-- usher_oldest_queued: one index probe per distinct priority on the waiting index
-- (queue_id, priority DESC, seq), where min(enqueued_at) would read every waiting row.
SELECT a.ref AS action_ref, q.partition_key, q.queue_length, q.active_count, q.total_enqueued,
       q.total_completed, q.total_failed, q.total_cancelled, q.total_expired, q.last_updated,
       usher_oldest_queued(q.id) AS oldest_enqueued_at,
       a.policy AS action_policy, p.policy AS pack_policy, a.paused_at IS NOT NULL AS paused
FROM actions a JOIN packs p ON p.id = a.pack_id
LEFT JOIN queues q ON q.action_id = a.id
ORDER BY a.ref, q.partition_key

-- name: line_stats_of_action
-- line_stats for one action, found by its unique ref. A statement of its own, not line_stats
-- with "ref IS NULL OR": a statement used often is prepared, and the generic plan of such a
-- test reads every action and every line; the plans of every line cost more than it on
-- average, so Postgres took it for one action too (measured at 1,000 actions).
SELECT a.ref AS action_ref, q.partition_key, q.queue_length, q.active_count, q.total_enqueued,
       q.total_completed, q.total_failed, q.total_cancelled, q.total_expired, q.last_updated,
       usher_oldest_queued(q.id) AS oldest_enqueued_at,
       a.policy AS action_policy, p.policy AS pack_policy, a.paused_at IS NOT NULL AS paused
FROM actions a JOIN packs p ON p.id = a.pack_id
LEFT JOIN queues q ON q.action_id = a.id
WHERE a.ref = :ref
ORDER BY a.ref, q.partition_key

-- name: execution_by_id
-- One execution, its values whole, and what started it: the enforcement that made it (a
-- rule's ref and its event; for a schedule, the schedule's ref and the tick it fired).
SELECT e.id, a.ref AS action_ref, e.status, e.parameters, e.priority, e.seq, e.attempt,
       e.enqueued_at, e.scheduled_at, e.started_at, e.finished_at, e.worker, e.result, e.error,
       q.partition_key, e.not_before, e.replay_of, e.run_at, e.requested_by, e.cancelled_by,
       e.rerun_of, cause.event_id, cause.rule,
       CASE WHEN cause.trigger = 'usher.schedule' THEN cause.payload ->> 'schedule' END
           AS schedule,
       CASE WHEN cause.trigger = 'usher.schedule' THEN cause.payload ->> 'fire_at' END
           AS fire_at
FROM executions e JOIN actions a ON a.id = e.action_id JOIN queues q ON q.id = e.queue_id
LEFT JOIN LATERAL (
    SELECT f.event_id, f.rule_ref AS rule, ev.trigger, ev.payload
    FROM enforcements f JOIN events ev ON ev.id = f.event_id
    WHERE f.execution_id = e.id
    ORDER BY f.id LIMIT 1
) cause ON true
WHERE e.id = :id

-- name: attempts_of_execution
SELECT attempt, outcome, queued_at, scheduled_at, started_at, finished_at, worker, error
FROM attempts WHERE execution_id = :id ORDER BY attempt

-- name: executions_newest_first
-- One page of executions, newest first; the before value is the cursor (an id) for the next
-- page. Each filter that is NULL folds away when the statement is planned for its values, so
-- the planner walks the matching index ((action_id, id DESC) or (status, id DESC)) instead
-- of the whole table, as if the statement named only the filters given. Prepared, it stays
-- planned for its values: the generic plan, which keeps every NULL test, is priced far above
-- those plans (and would walk the primary key), so Postgres does not take it.
-- The search filters fold the same way: match is a jsonpath over the parameters (GIN
-- ix_executions_parameters, jsonb_path_ops; app.search builds it from param.<name>=),
-- requester a requested_by ((requested_by, id DESC)), since/until the enqueued_at range.
SELECT e.id, a.ref AS action_ref, e.status, usher_capped_json(e.parameters) AS parameters,
       e.priority, e.seq, e.attempt, e.enqueued_at, e.scheduled_at, e.started_at,
       e.finished_at, e.worker, usher_capped_json(e.result) AS result,
       usher_capped_text(e.error) AS error, q.partition_key, e.not_before, e.replay_of,
       e.run_at, e.requested_by, e.cancelled_by, e.rerun_of
FROM executions e JOIN actions a ON a.id = e.action_id JOIN queues q ON q.id = e.queue_id
WHERE (CAST(:action AS text) IS NULL
       OR e.action_id = (SELECT id FROM actions WHERE ref = :action))
  AND (CAST(:status AS text) IS NULL OR e.status = :status)
  AND (CAST(:before AS bigint) IS NULL OR e.id < :before)
  AND (CAST(:match AS jsonpath) IS NULL OR e.parameters @@ CAST(:match AS jsonpath))
  AND (CAST(:requester AS text) IS NULL OR e.requested_by = :requester)
  AND (CAST(:since AS timestamptz) IS NULL OR e.enqueued_at >= :since)
  AND (CAST(:until AS timestamptz) IS NULL OR e.enqueued_at < :until)
ORDER BY e.id DESC LIMIT :limit

-- name: events_newest_first
-- One page of events, newest first, for GET /api/v1/events and usher events list; before is
-- the cursor (an event id) and the caller asks for one row more than the page to learn
-- whether there is a next one. With a trigger the planner walks ix_events_trigger_id
-- (trigger, id) backwards from before, without one the primary key: either way a page reads
-- its own rows only, as in executions_newest_first (which says why the NULL tests fold).
-- A payload or error over 4096 bytes stays in Postgres (usher_capped_json/_text).
SELECT id, trigger, usher_capped_json(payload) AS payload, received_at, processed_at,
       failed_at, failures, usher_capped_text(error) AS error
FROM events
WHERE (CAST(:trigger AS text) IS NULL OR trigger = :trigger)
  AND (CAST(:before AS bigint) IS NULL OR id < :before)
ORDER BY id DESC LIMIT :limit

-- name: enforcements_of_events
-- The enforcements of a page of events, on their unique key (event_id, rule_ref).
SELECT event_id, id, rule_ref AS rule, status, execution_id, usher_capped_text(reason) AS reason,
       created_at
FROM enforcements WHERE event_id = ANY(:ids) ORDER BY event_id, id
