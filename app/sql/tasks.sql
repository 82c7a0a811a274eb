-- The tasks' statements (tasks/*.py); the workers' hot path is in lines.sql.

-- name: sweep_try_lock
-- One sweeper at a time on the database: a session-level advisory lock on the sweeper's
-- own key (tasks.sweeper.SWEEP_LOCK), taken without waiting; false when another holds it.
SELECT pg_try_advisory_lock(CAST(:lock AS bigint))

-- name: sweep_unlock
SELECT pg_advisory_unlock(CAST(:lock AS bigint))
