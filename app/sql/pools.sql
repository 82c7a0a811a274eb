-- Pools and totals as the operator reads and changes them (policies/pools.py, web/metrics.py).
-- A level's limit in force is its live change's, else its files' (coalesce(live_max, max)),
-- as usher_admit_group reads it.

-- name: pools_listing
-- Every pool (or the one named): its limit, what holds it, what waits in the lines of the
-- actions taking it, and those actions.
SELECT l.ref, p.name AS pack, coalesce(l.live_max, l.max) AS level_limit, l.max AS pack_limit,
       l.live_max IS NOT NULL AS live, l.active,
       coalesce((SELECT sum(q.queue_length) FROM action_levels al
                 JOIN queues q ON q.action_id = al.action_id
                 WHERE al.level_id = l.id), 0) AS waiting,
       ARRAY(SELECT a.ref FROM action_levels al JOIN actions a ON a.id = al.action_id
             WHERE al.level_id = l.id ORDER BY a.ref) AS actions
FROM levels l JOIN packs p ON p.id = l.pack_id
WHERE l.kind = 'pool' AND (CAST(:ref AS text) IS NULL OR l.ref = :ref)
ORDER BY l.ref

-- name: level_group_by_ref
-- A level's group: that of any action taking it (they are one connected component); NULL
-- when no action takes it. Read before the group's lock, and again under it.
SELECT l.id, (SELECT min(a.level_group) FROM action_levels al
              JOIN actions a ON a.id = al.action_id WHERE al.level_id = l.id) AS level_group
FROM levels l WHERE l.kind = :kind AND l.ref = :ref

-- name: action_group_by_ref
-- Read before the group's lock, which comes before the action's row lock (a pack load takes
-- the group's, then writes the action); checked again under the action's lock.
SELECT level_group FROM actions WHERE ref = :ref

-- name: set_level_live_max
-- Under the level's group lock: a live limit, until a load of its pack writes it again.
UPDATE levels SET live_max = :limit, last_updated = clock_timestamp() WHERE id = :id

-- name: levels_of_actions
-- What each action (or the one named) takes above its lines, and how full each level is.
SELECT a.ref AS action_ref, l.kind, l.ref, coalesce(l.live_max, l.max) AS level_limit,
       l.live_max IS NOT NULL AS live, l.active
FROM action_levels al
JOIN actions a ON a.id = al.action_id
JOIN levels l ON l.id = al.level_id
WHERE CAST(:ref AS text) IS NULL OR a.ref = :ref
ORDER BY a.ref, l.kind DESC, l.ref

-- name: metrics_levels
SELECT kind, ref, coalesce(live_max, max) AS level_limit, active FROM levels ORDER BY kind, ref
