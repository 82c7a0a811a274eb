-- The ground floor's statements: API tokens and the dashboard's sessions (app.tokens).

-- name: create_token
-- A name is given once: a taken one inserts nothing (no row), and the caller says so.
INSERT INTO api_tokens (name, token_hash, read_only)
VALUES (:name, :hash, :read_only) ON CONFLICT (name) DO NOTHING RETURNING id

-- name: identify_token
-- last_used_at is kept to the minute (stale says it is older): a write (and a WAL flush)
-- per request would make every GET pay a commit and contend on the token's row.
SELECT name, token_hash, read_only,
       last_used_at IS NULL OR last_used_at < now() - interval '1 minute' AS stale
FROM api_tokens WHERE token_hash = :hash AND revoked_at IS NULL

-- name: touch_token
-- Only when identify_token found last_used_at stale.
UPDATE api_tokens SET last_used_at = now() WHERE token_hash = :hash

-- name: list_tokens
SELECT name, read_only, created_at, last_used_at, revoked_at
FROM api_tokens ORDER BY name

-- name: revoke_token
UPDATE api_tokens SET revoked_at = now()
WHERE name = :name AND revoked_at IS NULL RETURNING id

-- name: drop_expired_web_sessions
DELETE FROM web_sessions WHERE expires_at < now()

-- name: open_web_session
-- Postgres keeps only the SHA-256 of the session's nonce.
INSERT INTO web_sessions (nonce_hash, token_name, expires_at)
VALUES (:hash, :name, now() + make_interval(secs => :lifetime))

-- name: web_session_identity
-- An open session (not ended, not expired) and its stored token if that is not revoked:
-- NULL token_hash for a revoked token, and for a session opened with USHER_API_TOKEN
-- (which is not stored).
SELECT s.token_name, t.token_hash, t.read_only
FROM web_sessions s
LEFT JOIN api_tokens t ON t.name = s.token_name AND t.revoked_at IS NULL
WHERE s.nonce_hash = :hash AND s.ended_at IS NULL AND s.expires_at > now()

-- name: end_web_session
UPDATE web_sessions SET ended_at = now()
WHERE nonce_hash = :hash AND ended_at IS NULL

-- name: installation_id
-- This installation's id (one row, made by the migrations): in its queue names and messages.
SELECT id FROM installation
