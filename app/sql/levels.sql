-- Levels above the line: totals and pools (policies/levels.py, docs/architecture.md
-- "Levels: totals and pools"). The group lock is a transaction-level advisory lock in
-- the key space 724313; it comes before any line's lock.

-- name: lock_group
SELECT pg_advisory_xact_lock(724313, :group)

-- name: try_lock_group
SELECT pg_try_advisory_xact_lock(724313, :group) AS locked

-- name: group_of_line
-- Read before the line's lock, to take the group's lock first; checked again under it.
SELECT level_group FROM queues WHERE id = :queue_id

-- name: group_of_execution
SELECT q.level_group FROM execution_state e JOIN queues q ON q.id = e.queue_id WHERE e.id = :id

-- name: groups_of_actions
SELECT DISTINCT level_group FROM actions
WHERE id = ANY(CAST(:actions AS integer[])) AND level_group IS NOT NULL
ORDER BY level_group

-- name: group_candidates
-- The lines of a group that can grant now, each with its head: not paused, a free line
-- slot, every level of the action with a free slot, and an eligible head ((priority DESC,
-- seq) as in usher_admit: queued, or a due retry that gave its slot back). The caller holds
-- the group's lock, so this snapshot sees every committed change of the group.
WITH room AS (
    SELECT al.action_id, array_agg(l.id ORDER BY l.id) AS levels,
           bool_and(l.active < coalesce(l.live_max, l.max)) AS free
    FROM action_levels al JOIN levels l ON l.id = al.level_id
    JOIN actions a ON a.id = al.action_id
    WHERE a.level_group = :group
    GROUP BY al.action_id
)
SELECT q.id AS queue_id, q.action_id, a.ref, a.timeout_s, q.last_granted_at,
       coalesce(a.resolved_concurrency, :default) AS line_limit, room.levels,
       a.resolved_rate_limited AS rate_limited, CAST(a.policy AS text) AS action_policy,
       CAST(p.policy AS text) AS pack_policy, h.enqueued_at AS head_at, h.id AS head_id
FROM queues q
JOIN actions a ON a.id = q.action_id
JOIN packs p ON p.id = a.pack_id
JOIN room ON room.action_id = a.id
CROSS JOIN LATERAL (
    SELECT w.id, r.enqueued_at FROM (
        (SELECT e.id, e.priority, e.seq FROM execution_state e
         WHERE e.queue_id = q.id AND e.status = 'queued'
         ORDER BY e.priority DESC, e.seq LIMIT 1)
        UNION ALL
        (SELECT e.id, e.priority, e.seq FROM execution_state e
         WHERE e.queue_id = q.id AND e.status = 'retrying' AND NOT e.holds_slot
           AND e.not_before <= clock_timestamp()
         ORDER BY e.priority DESC, e.seq LIMIT 1)
    ) w JOIN execution_requests r ON r.id = w.id
    ORDER BY w.priority DESC, w.seq LIMIT 1
) h
WHERE q.level_group = :group AND a.paused_at IS NULL AND room.free
  AND q.active_count < coalesce(a.resolved_concurrency, :default)

-- name: take_levels
-- The execution just granted (usher_admit) takes a slot of each level; its line notes when
-- it last granted. Only under the group's lock, after the line: no wait cycle.
WITH held AS (
    UPDATE execution_state SET levels = CAST(:levels AS integer[]) WHERE id = :id RETURNING id
),
taken AS (
    UPDATE levels SET active = active + 1, last_updated = clock_timestamp()
    WHERE id = ANY(CAST(:levels AS integer[]))
)
UPDATE queues SET last_granted_at = clock_timestamp() WHERE id = :queue_id

-- name: groups_touched_by_load
-- The groups a pack load may change: those of the loaded packs' actions, and of every
-- action that takes a level of theirs or one of the pools they name.
SELECT DISTINCT a.level_group FROM actions a
WHERE a.level_group IS NOT NULL AND (
    a.pack_id IN (SELECT id FROM packs WHERE name = ANY(CAST(:packs AS text[])))
    OR a.id IN (
        SELECT al.action_id FROM action_levels al JOIN levels l ON l.id = al.level_id
        WHERE l.ref = ANY(CAST(:pools AS text[]))
           OR l.pack_id IN (SELECT id FROM packs WHERE name = ANY(CAST(:packs AS text[])))))
ORDER BY 1

-- name: known_pools
SELECT ref FROM levels WHERE kind = 'pool' AND ref = ANY(CAST(:refs AS text[]))

-- name: pool_users_elsewhere
-- Actions of other packs that take a pool this load removes: the load is refused.
SELECT l.ref AS pool, a.ref AS action FROM levels l
JOIN action_levels al ON al.level_id = l.id JOIN actions a ON a.id = al.action_id
WHERE l.kind = 'pool' AND l.pack_id = :pack_id AND l.ref <> ALL(CAST(:keep AS text[]))
  AND a.pack_id <> :pack_id
ORDER BY 1, 2

-- name: store_pack_levels
-- A pack's pools and its actions' totals, as its files now say (a live change is cleared);
-- the ones no longer named are deleted, and so are its actions' level rows (rewritten next).
WITH wanted AS (
    SELECT * FROM jsonb_to_recordset(CAST(:levels AS jsonb)) AS w(kind text, ref text, max integer)
),
upserted AS (
    INSERT INTO levels AS l (kind, ref, pack_id, max)
    SELECT w.kind, w.ref, :pack_id, w.max FROM wanted w
    ON CONFLICT (kind, ref) DO UPDATE SET max = EXCLUDED.max, live_max = NULL,
        pack_id = EXCLUDED.pack_id, last_updated = clock_timestamp()
    RETURNING l.id
),
removed AS (
    DELETE FROM levels l WHERE l.pack_id = :pack_id
      AND NOT EXISTS (SELECT 1 FROM wanted w WHERE w.kind = l.kind AND w.ref = l.ref)
)
DELETE FROM action_levels al USING actions a
WHERE a.id = al.action_id AND a.pack_id = :pack_id

-- name: store_action_levels
INSERT INTO action_levels (action_id, level_id)
SELECT a.id, l.id
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(action text, kind text, level text)
JOIN actions a ON a.ref = r.action
JOIN levels l ON l.kind = r.kind AND l.ref = r.level
ON CONFLICT DO NOTHING

-- name: all_action_levels
SELECT action_id, level_id FROM action_levels ORDER BY action_id, level_id

-- name: store_action_groups
-- Each action's group (NULL: none); returns the actions whose group changed.
UPDATE actions a SET level_group = g.level_group
FROM (
    SELECT a2.id, r.level_group FROM actions a2
    LEFT JOIN jsonb_to_recordset(CAST(:groups AS jsonb)) AS r(id integer, level_group integer)
        ON r.id = a2.id
) g
WHERE a.id = g.id AND a.level_group IS DISTINCT FROM g.level_group
RETURNING a.id

-- name: lock_lines_of_actions
-- Every line of these actions, in the one order of multi-line transactions.
SELECT q.id FROM queues q JOIN actions a ON a.id = q.action_id
WHERE q.action_id = ANY(CAST(:actions AS integer[]))
ORDER BY q.action_id, q.partition_key
FOR NO KEY UPDATE OF q

-- name: copy_groups_to_lines
UPDATE queues q SET level_group = a.level_group
FROM actions a WHERE a.id = q.action_id AND q.action_id = ANY(CAST(:actions AS integer[]))
