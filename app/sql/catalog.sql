-- The catalog (policies.catalog, policies.rules): packs and rules as the CLI, the API and the
-- dashboard list them, and a rule's enabled switch. A rule's enforcement counts are over
-- the most recent enforcements only (RECENT_ENFORCEMENTS in policies.rules): one backward
-- walk of the primary key, however long the history.

-- name: catalog_packs
-- Every pack with how many actions, rules, schedules and webhooks it holds (the pack_id
-- indexes of each table).
SELECT p.name, p.description, p.updated_at,
       (SELECT count(*) FROM actions a WHERE a.pack_id = p.id) AS actions,
       (SELECT count(*) FROM rules r WHERE r.pack_id = p.id) AS rules,
       (SELECT count(*) FROM schedules s WHERE s.pack_id = p.id) AS schedules,
       (SELECT count(*) FROM webhooks w WHERE w.pack_id = p.id) AS webhooks
FROM packs p ORDER BY p.name

-- name: catalog_rules
-- Every rule (or those of :trigger, or the one named :ref) with its counts by status among
-- the last :recent enforcements, and when it last matched among them.
WITH recent AS MATERIALIZED (
    SELECT rule_ref, status, created_at FROM enforcements ORDER BY id DESC LIMIT :recent
), counted AS (
    SELECT rule_ref, jsonb_object_agg(status, n) AS counts, max(last_at) AS last_at
    FROM (SELECT rule_ref, status, count(*) AS n, max(created_at) AS last_at
          FROM recent GROUP BY rule_ref, status) c
    GROUP BY rule_ref
)
SELECT r.ref, p.name AS pack, r.name, r.description, r.trigger, r.criteria,
       r.action_ref AS action, r.parameters, r.priority, r.enabled, r.updated_at,
       coalesce(c.counts, '{}'::jsonb) AS recent_enforcements, c.last_at AS last_enforced_at
FROM rules r JOIN packs p ON p.id = r.pack_id LEFT JOIN counted c ON c.rule_ref = r.ref
WHERE (CAST(:trigger AS text) IS NULL OR r.trigger = :trigger)
  AND (CAST(:ref AS text) IS NULL OR r.ref = :ref)
ORDER BY r.ref

-- name: rule_refs
SELECT ref FROM rules ORDER BY ref

-- name: rule_for_switch
-- Before a rule is switched: its trigger, whether it is enabled, and (for a rule on
-- usher.execution) whether executions_emit is on now and another enabled rule listens.
SELECT r.id, r.trigger, r.enabled, usher_execution_events_enabled() AS emitting,
       EXISTS (SELECT 1 FROM rules o WHERE o.trigger = r.trigger AND o.enabled
                                       AND o.id <> r.id) AS others
FROM rules r WHERE r.ref = :ref

-- name: switch_rule
-- A plain UPDATE of the row: the statement trigger on rules (usher_execution_events_sync)
-- switches execution events on or off after it, as after a pack load. Event processing
-- holds KEY SHARE on the rules it matches; this waits for it, and the next event sees the
-- new state.
UPDATE rules SET enabled = :enabled, updated_at = now()
WHERE id = :id AND enabled IS DISTINCT FROM :enabled
