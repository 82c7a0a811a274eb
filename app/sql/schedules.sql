-- Schedules (policies.schedules): which are due, the ticks they fire, listing and pausing.
-- A tick fires once because its row in schedule_fires is inserted once: the primary key
-- (schedule_id, fire_at) is the whole guarantee; the row locks only keep beats from doing
-- the same work twice.

-- name: lock_due_schedules
-- The schedules due at :now (NULL: the database's clock, the one clock every beat shares),
-- oldest tick first, a bounded batch. SKIP LOCKED: a schedule another beat is firing is that
-- beat's; once it commits, the row's next_fire_at is past now, and the recheck of a row
-- that changed while this statement waited for it drops it. Reads the partial index of
-- schedules that may fire.
SELECT s.id, s.ref, s.cron, s.every_s, s.at, s.timezone, s.action_ref, s.trigger,
       s.parameters, s.missed, s.next_fire_at, n.now
FROM (SELECT coalesce(CAST(:now AS timestamptz), clock_timestamp()) AS now) n
JOIN schedules s ON s.next_fire_at <= n.now
WHERE s.enabled AND s.paused_at IS NULL
ORDER BY s.next_fire_at, s.id
LIMIT :limit
FOR UPDATE OF s SKIP LOCKED

-- name: claim_fires
-- Each tick of a batch claimed at most once, ever: a tick already in schedule_fires (another
-- beat fired it) is not returned, and only a returned tick fires. The rows travel as one
-- JSON document.
INSERT INTO schedule_fires (schedule_id, fire_at, fired_at)
SELECT r.s, r.f, clock_timestamp()
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(s integer, f timestamptz)
ORDER BY r.s, r.f
ON CONFLICT (schedule_id, fire_at) DO NOTHING
RETURNING schedule_id, fire_at

-- name: set_fire_events
-- The event each claimed tick made.
UPDATE schedule_fires f SET event_id = r.e
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(s integer, f timestamptz, e bigint)
WHERE f.schedule_id = r.s AND f.fire_at = r.f

-- name: advance_schedules
-- After a batch: each schedule's next tick (NULL: none left) and the latest tick it fired.
UPDATE schedules s SET next_fire_at = r.n, last_fire_at = greatest(s.last_fire_at, r.l)
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id integer, n timestamptz, l timestamptz)
WHERE s.id = r.id

-- name: next_schedule_due
-- Seconds until the next schedule falls due by the database's clock (NULL: none may fire),
-- for the beat's sleep; the partial index's first entry.
SELECT extract(epoch FROM min(next_fire_at) - clock_timestamp()) AS wait_s
FROM schedules WHERE enabled AND paused_at IS NULL

-- name: list_schedules
-- Every schedule, or the one named :ref.
SELECT s.ref, p.name AS pack, s.name, s.description, s.cron, s.every_s, s.at, s.timezone,
       s.action_ref AS action, s.trigger, s.parameters, s.missed, s.enabled,
       s.paused_at IS NOT NULL AS paused, s.paused_at, s.next_fire_at, s.last_fire_at
FROM schedules s JOIN packs p ON p.id = s.pack_id
WHERE CAST(:ref AS text) IS NULL OR s.ref = :ref
ORDER BY s.ref

-- name: lock_schedule
-- Waits for a beat firing it (a short transaction): a pause lands between two batches.
SELECT s.id, s.cron, s.every_s, s.at, s.timezone, s.paused_at, clock_timestamp() AS now
FROM schedules s WHERE s.ref = :ref
FOR NO KEY UPDATE

-- name: pause_schedule
UPDATE schedules SET paused_at = coalesce(paused_at, clock_timestamp()) WHERE id = :id

-- name: resume_schedule
-- The ticks that fell while it was paused were not missed (nobody was down): it goes on from
-- the next one. Resuming a running schedule changes nothing.
UPDATE schedules SET paused_at = NULL,
    next_fire_at = CASE WHEN paused_at IS NULL THEN next_fire_at ELSE CAST(:next AS timestamptz) END
WHERE id = :id
