-- The second round of /metrics families (web.metrics): each one a count of rows Usher keeps
-- anyway, grouped by a label of bounded cardinality (actions, rules, triggers, schedules).

-- name: metrics_oldest_waiting
-- The partial index on waiting executions holds exactly these rows (at most the lines'
-- max_queue_length); an action with nothing waiting answers 0.
SELECT a.ref AS action,
       coalesce(extract(epoch FROM clock_timestamp() - min(w.queued_at)), 0) AS seconds
FROM actions a LEFT JOIN (
    -- A waiting row's queued_at is set when it joins; its request is read only otherwise.
    SELECT q.action_id, coalesce(e.queued_at, (SELECT r.enqueued_at FROM execution_requests r
                                               WHERE r.id = e.id)) AS queued_at
    FROM execution_state e JOIN queues q ON q.id = e.queue_id
    WHERE e.status = 'queued'
) w ON w.action_id = a.id
GROUP BY a.ref ORDER BY a.ref

-- name: metrics_concurrency_limits
-- The line limit that policies.limits.store resolved (a live change included); NULL: the
-- settings' default, filled in by the caller.
SELECT ref AS action, resolved_concurrency AS concurrency FROM actions ORDER BY ref

-- name: metrics_rejected
-- What Usher records as refused: a rejected enforcement (its reason starts with the error's
-- kind, "QueueFull: ..."), counted under the rule's action; a delayed execution rejected
-- when it fell due (its line was full). The kind is cut to 40 characters. Those retention
-- removed are added from history_pruned (policies.retention): the counter never goes down.
SELECT action, reason, sum(n) AS n FROM (
    SELECT coalesce(r.action_ref, '') AS action,
           left(CASE WHEN n.reason LIKE '%:%' THEN split_part(n.reason, ':', 1)
                     ELSE 'other' END, 40) AS reason,
           1 AS n
    FROM enforcements n LEFT JOIN rules r ON r.id = n.rule_id
    WHERE n.status = 'rejected'
    UNION ALL
    SELECT a.ref, 'QueueFull', 1
    FROM execution_state e JOIN queues q ON q.id = e.queue_id JOIN actions a ON a.id = q.action_id
    WHERE e.status = 'rejected'
    UNION ALL
    SELECT label, detail, n FROM history_pruned WHERE family = 'rejected'
) s
GROUP BY action, reason ORDER BY action, reason

-- name: metrics_events
SELECT trigger, sum(n) AS n FROM (
    SELECT trigger, count(*) AS n FROM events GROUP BY trigger
    UNION ALL
    SELECT label, n FROM history_pruned WHERE family = 'events'
) s
GROUP BY trigger ORDER BY trigger

-- name: metrics_enforcements
SELECT rule, status, sum(n) AS n FROM (
    SELECT rule_ref AS rule, status, count(*) AS n FROM enforcements GROUP BY rule_ref, status
    UNION ALL
    SELECT label, detail, n FROM history_pruned WHERE family = 'enforcements'
) s
GROUP BY rule, status ORDER BY rule, status

-- name: metrics_schedule_fires
-- Every schedule, fired or not yet.
SELECT s.ref AS schedule,
       (SELECT count(*) FROM schedule_fires f WHERE f.schedule_id = s.id)
       + coalesce((SELECT h.n FROM history_pruned h
                   WHERE h.family = 'schedule_fires' AND h.label = s.ref AND h.detail = ''), 0)
       AS n
FROM schedules s
ORDER BY s.ref
