-- Retention (policies.retention): finished history older than USHER_RETENTION_S removed a
-- bounded batch at a time, each batch one short transaction, what /metrics counts of it
-- added to history_pruned in the same statement. Each returns how many rows it removed.

-- name: prune_executions
-- The oldest finished executions of each final status, read from the (status, id DESC)
-- index: a dead one only once it left the dead-letter queue (replayed or purged) that long
-- ago. Their attempts and output go by ON DELETE CASCADE, the links to them (replay_of,
-- rerun_of, an enforcement's execution_id) become NULL through their indexes. A rejected
-- one was a refusal /metrics counts (usher_requests_rejected_total): it is counted here.
WITH doomed AS (
    SELECT e.id, e.status
    FROM unnest(CAST(:statuses AS text[])) AS s(status)
    CROSS JOIN LATERAL (
        SELECT x.id, x.status FROM execution_state x
        -- The literal list lets the planner take the partial (status, id DESC) index.
        WHERE x.status = s.status AND x.status NOT IN ('scheduled', 'running')
          AND x.finished_at < clock_timestamp() - make_interval(secs => :keep_s)
          AND (x.status <> 'dead' OR x.dlq_cleared_at
               < clock_timestamp() - make_interval(secs => :keep_s))
        ORDER BY x.id
        LIMIT :batch
    ) e
    ORDER BY e.id
    LIMIT :batch
), gone AS (
    -- The request's delete takes its state row with it (ON DELETE CASCADE).
    DELETE FROM execution_requests x USING doomed d WHERE x.id = d.id
    RETURNING d.status, x.action_id
), refused AS (
    INSERT INTO history_pruned AS h (family, label, detail, n)
    SELECT 'rejected', a.ref, 'QueueFull', count(*)
    FROM gone g JOIN actions a ON a.id = g.action_id
    WHERE g.status = 'rejected'
    GROUP BY a.ref
    ON CONFLICT (family, label, detail) DO UPDATE SET n = h.n + excluded.n
)
SELECT count(*) FROM gone

-- name: prune_events
-- The oldest processed events whose executions are all gone (an enforcement that still
-- names one keeps its event: the execution's page shows what caused it), with their
-- enforcements; an event that failed for good stays, as a dead execution does. Their
-- webhook deliveries go by ON DELETE CASCADE, a schedule fire's link becomes NULL.
WITH doomed AS (
    SELECT ev.id FROM events ev
    WHERE ev.processed_at IS NOT NULL
      AND ev.received_at < clock_timestamp() - make_interval(secs => :keep_s)
      AND NOT EXISTS (SELECT 1 FROM enforcements f
                      WHERE f.event_id = ev.id AND f.execution_id IS NOT NULL)
    ORDER BY ev.id
    LIMIT :batch
), enforced AS (
    DELETE FROM enforcements f USING doomed d WHERE f.event_id = d.id
    RETURNING f.rule_ref, f.rule_id, f.status, f.reason
), counted AS (
    INSERT INTO history_pruned AS h (family, label, detail, n)
    SELECT 'enforcements', rule_ref, status, count(*) FROM enforced GROUP BY rule_ref, status
    ON CONFLICT (family, label, detail) DO UPDATE SET n = h.n + excluded.n
), refused AS (
    -- As metrics_rejected names a rejected enforcement: its rule's action, its reason's kind.
    INSERT INTO history_pruned AS h (family, label, detail, n)
    SELECT 'rejected', action, reason, count(*) FROM (
        SELECT coalesce(r.action_ref, '') AS action,
               left(CASE WHEN f.reason LIKE '%:%' THEN split_part(f.reason, ':', 1)
                         ELSE 'other' END, 40) AS reason
        FROM enforced f LEFT JOIN rules r ON r.id = f.rule_id
        WHERE f.status = 'rejected'
    ) k
    GROUP BY action, reason
    ON CONFLICT (family, label, detail) DO UPDATE SET n = h.n + excluded.n
), gone AS (
    DELETE FROM events ev USING doomed d WHERE ev.id = d.id RETURNING ev.trigger
), triggers AS (
    INSERT INTO history_pruned AS h (family, label, detail, n)
    SELECT 'events', trigger, '', count(*) FROM gone GROUP BY trigger
    ON CONFLICT (family, label, detail) DO UPDATE SET n = h.n + excluded.n
)
SELECT count(*) FROM gone

-- name: prune_schedule_fires
-- Ticks fired longer ago than the retention and a day: a beat never claims one that old
-- again (a schedule's next_fire_at moved past it when it fired), so the primary key that
-- makes each tick fire once has nothing left to guard in them.
WITH doomed AS (
    SELECT f.schedule_id, f.fire_at FROM schedule_fires f
    WHERE f.fire_at < clock_timestamp() - make_interval(secs => greatest(:keep_s, 86400))
    ORDER BY f.fire_at
    LIMIT :batch
), gone AS (
    DELETE FROM schedule_fires f USING doomed d
    WHERE f.schedule_id = d.schedule_id AND f.fire_at = d.fire_at
    RETURNING f.schedule_id
), counted AS (
    INSERT INTO history_pruned AS h (family, label, detail, n)
    SELECT 'schedule_fires', s.ref, '', count(*)
    FROM gone g JOIN schedules s ON s.id = g.schedule_id
    GROUP BY s.ref
    ON CONFLICT (family, label, detail) DO UPDATE SET n = h.n + excluded.n
)
SELECT count(*) FROM gone

-- name: prune_audit
WITH doomed AS (
    SELECT id FROM audit
    WHERE at < clock_timestamp() - make_interval(secs => :keep_s)
    ORDER BY id
    LIMIT :batch
), gone AS (
    DELETE FROM audit a USING doomed d WHERE a.id = d.id RETURNING a.id
)
SELECT count(*) FROM gone

-- name: autovacuum_on
-- Retention deletes; only vacuum makes their space reusable, and autovacuum is what runs it.
SELECT current_setting('autovacuum') = 'on'
