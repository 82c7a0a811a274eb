-- The audit: one row per mutation (app.audit), read newest first.

-- name: audit_record
-- Its own short transaction (the caller's unit of work): at is the database's clock.
INSERT INTO audit (actor, verb, target, outcome, detail)
VALUES (:actor, :verb, :target, :outcome, CAST(:detail AS jsonb))

-- name: audit_record_many
-- The rows of a group commit's requests, in its transaction: one statement for all.
INSERT INTO audit (actor, verb, target, outcome, detail)
SELECT r.actor, r.verb, r.target, r.outcome, r.detail
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS r(actor text, verb text, target text, outcome text, detail jsonb)

-- name: audit_newest_first
-- One page, newest first by id (the primary key's index, walked backwards); before is the
-- cursor (an id) and the caller asks for one row more than the page to learn whether there
-- is a next one.
SELECT id, at, actor, verb, target, outcome, detail
FROM audit
WHERE CAST(:before AS bigint) IS NULL OR id < :before
ORDER BY id DESC LIMIT :limit
