-- Idempotency keys (policies.idempotency): one row per (scope, key), claimed in the
-- transaction that creates the execution or event it answers for.

-- name: claim_idempotency_keys
-- Take these keys, in (scope, key) order: a new one is inserted, one older than the TTL
-- replaced (a fresh claim, its answer cleared). A key another transaction is inserting makes
-- this wait for it: once that commits, the key is taken (no row returned here, but its row
-- is locked until this transaction ends); had it rolled back, the key is inserted here.
-- The rows returned are the keys this transaction holds now.
INSERT INTO idempotency_keys AS k (scope, key, fingerprint)
SELECT r.s, r.k, r.f FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(s text, k text, f text)
ORDER BY r.s, r.k
ON CONFLICT (scope, key) DO UPDATE
    SET fingerprint = excluded.fingerprint, response = NULL, created_at = now()
    WHERE k.created_at < now() - make_interval(secs => :ttl)
RETURNING k.scope, k.key

-- name: idempotency_answers
-- The keys another request holds: what that request was, and its answer.
SELECT k.scope, k.key, k.fingerprint, k.response
FROM idempotency_keys k JOIN jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(s text, k text)
    ON k.scope = r.s AND k.key = r.k

-- name: remember_idempotency_answers
UPDATE idempotency_keys k SET response = r.v
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(s text, k text, v jsonb)
WHERE k.scope = r.s AND k.key = r.k

-- name: forget_idempotency_keys
-- The keys of refused requests: the same key may come again with the request fixed.
DELETE FROM idempotency_keys k
USING jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(s text, k text)
WHERE k.scope = r.s AND k.key = r.k

-- name: prune_idempotency_keys
-- A bounded batch of the keys past the TTL, oldest first (the created_at index).
DELETE FROM idempotency_keys
WHERE (scope, key) IN (
    SELECT scope, key FROM idempotency_keys
    WHERE created_at < now() - make_interval(secs => :ttl)
    ORDER BY created_at LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
RETURNING key
