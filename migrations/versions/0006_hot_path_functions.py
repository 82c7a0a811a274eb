"""hot path functions: admit, release and finish in one round trip each

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 07:40:00

Admission's SQL lives here, once: ``policies.admission`` calls these functions. PL/pgSQL
keeps each statement's plan across calls, and ``usher_finish`` lets a worker end an attempt,
free its slot and grant the next execution in a single statement (one round trip, one
commit) whenever no Python policy is needed: success or cancel, on a line without rate limits.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ADMIT = """
CREATE OR REPLACE FUNCTION usher_admit(p_queue_id integer, p_limit integer, p_cap integer)
RETURNS TABLE (execution_id bigint, attempt integer)
LANGUAGE plpgsql AS $$
-- Grant free slots to the oldest eligible executions, (priority DESC, seq) order. The caller
-- holds the line's lock. Eligible: queued, or retrying without a held slot and already due.
BEGIN
    RETURN QUERY
    WITH now AS (SELECT clock_timestamp() AS ts),
    free AS (
        SELECT LEAST(GREATEST(p_limit - q.active_count, 0), coalesce(p_cap, p_limit)) AS n
        FROM queues q WHERE q.id = p_queue_id
    ),
    candidates AS (
        (SELECT e.id, e.priority, e.seq, e.status FROM executions e
         WHERE e.queue_id = p_queue_id AND e.status = 'queued'
         ORDER BY e.priority DESC, e.seq LIMIT (SELECT n FROM free))
        UNION ALL
        (SELECT e.id, e.priority, e.seq, e.status FROM executions e
         WHERE e.queue_id = p_queue_id AND e.status = 'retrying' AND NOT e.holds_slot
           AND e.not_before <= (SELECT ts FROM now)
         ORDER BY e.priority DESC, e.seq LIMIT (SELECT n FROM free))
        ORDER BY 2 DESC, 3 LIMIT (SELECT n FROM free)
    ),
    granted AS (
        UPDATE executions e SET status = 'scheduled',
            scheduled_at = (SELECT ts FROM now), published_at = (SELECT ts FROM now)
        FROM candidates c WHERE e.id = c.id
        RETURNING e.id, e.attempt, e.priority, e.seq, c.status AS was
    ),
    counted AS (
        UPDATE queues q SET
            active_count = q.active_count + (SELECT count(*) FROM granted),
            queue_length = q.queue_length - (SELECT count(*) FROM granted g WHERE g.was = 'queued'),
            last_updated = (SELECT ts FROM now)
        WHERE q.id = p_queue_id AND EXISTS (SELECT 1 FROM granted)
    )
    SELECT g.id, g.attempt FROM granted g ORDER BY g.priority DESC, g.seq;
END
$$;
"""

RELEASE = """
CREATE OR REPLACE FUNCTION usher_release(
    p_id bigint, p_attempt integer, p_status text, p_outcome text, p_hold boolean,
    p_delay_s double precision, p_result jsonb, p_error text, p_lease_expired boolean
)
RETURNS TABLE (queue_id integer, not_before timestamptz)
LANGUAGE plpgsql AS $$
-- End attempt p_attempt with final status p_status (or 'retrying'), record it in attempts,
-- and update the line's counters. Fenced: a stale attempt, a second report or (for the
-- sweeper) a lease renewed since changes nothing and returns no row. The caller holds the
-- line's lock and admits afterwards.
DECLARE
    retrying boolean := p_status = 'retrying';
    ts timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH done AS (
        UPDATE executions e SET
            status = p_status,
            attempt = e.attempt + CASE WHEN retrying THEN 1 ELSE 0 END,
            finished_at = CASE WHEN retrying THEN NULL ELSE ts END,
            not_before = CASE WHEN retrying THEN ts + make_interval(secs => p_delay_s) END,
            queued_at = CASE WHEN retrying THEN ts + make_interval(secs => p_delay_s)
                ELSE e.queued_at END,
            holds_slot = p_hold,
            -- A retry's next attempt starts blank; this one goes to attempts below.
            scheduled_at = CASE WHEN retrying THEN NULL ELSE e.scheduled_at END,
            started_at = CASE WHEN retrying THEN NULL ELSE e.started_at END,
            result = p_result, error = p_error, lease_expires_at = NULL
        WHERE e.id = p_id AND e.attempt = p_attempt AND e.status IN ('scheduled', 'running')
          AND (NOT p_lease_expired OR e.lease_expires_at < ts)
        RETURNING e.id, e.queue_id, e.not_before
    ),
    history AS (
        -- Sub-statements see the snapshot from before the UPDATE: the attempt's own times.
        INSERT INTO attempts (execution_id, queue_id, attempt, outcome, queued_at,
                              scheduled_at, started_at, finished_at, worker, error, kept_slot)
        SELECT e.id, e.queue_id, p_attempt, p_outcome, e.queued_at, e.scheduled_at,
               e.started_at, ts, e.worker, p_error, p_hold
        FROM executions e WHERE e.id = p_id AND EXISTS (SELECT 1 FROM done)
    ),
    counted AS (
        UPDATE queues q SET
            active_count = q.active_count - CASE WHEN p_hold THEN 0 ELSE 1 END,
            total_completed = q.total_completed + (p_status = 'succeeded')::int,
            total_failed = q.total_failed
                + (p_status IN ('failed', 'timed_out', 'dead'))::int,
            total_cancelled = q.total_cancelled + (p_status = 'cancelled')::int,
            last_updated = ts
        WHERE q.id = (SELECT d.queue_id FROM done d)
    )
    SELECT d.queue_id, d.not_before FROM done d;
END
$$;
"""

FINISH = """
CREATE OR REPLACE FUNCTION usher_finish(
    p_id bigint, p_attempt integer, p_status text, p_result jsonb, p_error text,
    p_default_limit integer
)
RETURNS TABLE (
    kind text, queue_id integer, action_ref text, timeout_s integer,
    grant_ids bigint[], grant_attempts integer[]
)
LANGUAGE plpgsql AS $$
-- Release + admit in one statement for an attempt that ended 'succeeded' or 'cancelled' on a
-- line without rate limits (no retry or rate policy to evaluate in Python). kind is 'done',
-- 'stale' (nothing changed: not this attempt's to report) or 'policy' (nothing changed:
-- the caller must take the full path in policies.admission.release).
DECLARE
    line_id integer;
    info record;
    line_limit integer;
    released boolean;
BEGIN
    SELECT e.queue_id INTO line_id FROM executions e WHERE e.id = p_id;
    IF line_id IS NULL THEN
        RETURN QUERY SELECT 'stale'::text, NULL::integer, NULL::text, NULL::integer,
            NULL::bigint[], NULL::integer[];
        RETURN;
    END IF;
    -- The line's lock before any execution row of it, as everywhere in admission.
    SELECT a.ref::text AS ref, a.timeout_s, a.policy AS ap, p.policy AS pp,
        a.paused_at IS NOT NULL AS paused
    INTO info
    FROM queues q JOIN actions a ON a.id = q.action_id JOIN packs p ON p.id = a.pack_id
    WHERE q.id = line_id
    FOR NO KEY UPDATE OF q;
    IF coalesce(info.ap -> 'rate_limit', 'null') <> 'null'
       OR coalesce(info.pp -> 'rate_limit', 'null') <> 'null' THEN
        RETURN QUERY SELECT 'policy'::text, line_id, info.ref, info.timeout_s,
            NULL::bigint[], NULL::integer[];
        RETURN;
    END IF;
    -- policies.limits.resolve: action policy, then pack policy, then the global default;
    -- int() in Python takes 5.0 as 5, so go through numeric (a bare ::integer refuses '5.0').
    line_limit := coalesce(trunc((info.ap ->> 'concurrency')::numeric)::integer,
                           trunc((info.pp ->> 'concurrency')::numeric)::integer,
                           p_default_limit);
    SELECT true INTO released
    FROM usher_release(p_id, p_attempt, p_status, p_status, false, 0, p_result, p_error, false);
    IF released IS NULL THEN
        RETURN QUERY SELECT 'stale'::text, line_id, info.ref, info.timeout_s,
            NULL::bigint[], NULL::integer[];
        RETURN;
    END IF;
    IF info.paused THEN
        RETURN QUERY SELECT 'done'::text, line_id, info.ref, info.timeout_s,
            ARRAY[]::bigint[], ARRAY[]::integer[];
        RETURN;
    END IF;
    RETURN QUERY
    SELECT 'done'::text, line_id, info.ref, info.timeout_s,
           coalesce(array_agg(g.execution_id ORDER BY g.n), ARRAY[]::bigint[]),
           coalesce(array_agg(g.attempt ORDER BY g.n), ARRAY[]::integer[])
    FROM usher_admit(line_id, line_limit, NULL) WITH ORDINALITY AS g(execution_id, attempt, n);
END
$$;
"""


def upgrade() -> None:
    for ddl in (ADMIT, RELEASE, FINISH):
        op.execute(ddl)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS usher_finish(bigint, integer, text, jsonb, text, integer)")
    op.execute(
        "DROP FUNCTION IF EXISTS usher_release(bigint, integer, text, text, boolean, "
        "double precision, jsonb, text, boolean)"
    )
    op.execute("DROP FUNCTION IF EXISTS usher_admit(integer, integer, integer)")
