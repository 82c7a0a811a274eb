-- Usher's PL/pgSQL, as it stands now: the one copy.
--
-- Version 11 (migrations 0008, 0013, 0018 and 0025 load this file; 0006 created the first versions). Every
-- statement is CREATE OR REPLACE, so loading the file again changes nothing. To change a
-- function: edit it here, bump the version, and add a migration that loads this file again
-- (dropping first any function whose arguments or result change).
-- tests/integration/test_sql_functions.py checks that a migrated database holds exactly these.

-- The attempt totals behind /metrics (migration 0005 made them): a row trigger on attempts
-- keeps one row per line and outcome. Histogram arrays hold one count per bucket (slot i:
-- v <= bound i and above bound i-1), then the overflow slot (+Inf only), then a slot for
-- attempts without the value (never started). The bounds must equal web.metrics'
-- DURATION_BUCKETS / WAIT_BUCKETS (a test checks); changing them takes a migration that
-- loads this file and calls usher_attempt_totals_rebuild().
CREATE OR REPLACE FUNCTION usher_bucket(v numeric, bounds numeric[]) RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    i integer := 1;
    n integer := cardinality(bounds);
BEGIN
    IF v IS NULL THEN
        RETURN n + 2;
    END IF;
    WHILE i <= n AND v > bounds[i] LOOP
        i := i + 1;
    END LOOP;
    RETURN i;
END
$$;

-- Runs in the releasing transaction, under the line's lock: one UPDATE of the line's row for
-- the outcome (an INSERT only the first time).
CREATE OR REPLACE FUNCTION usher_attempt_totals_add(a attempts, sign integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    run numeric := extract(epoch FROM a.finished_at - a.started_at);
    wait numeric := extract(epoch FROM a.started_at - a.queued_at);
    r integer := usher_bucket(run, ARRAY[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600]::numeric[]);
    w integer := usher_bucket(wait, ARRAY[0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600]::numeric[]);
BEGIN
    LOOP
        UPDATE attempt_totals SET
            attempts = attempts + sign,
            retries = retries + CASE WHEN a.attempt > 1 THEN sign ELSE 0 END,
            run_sum = run_sum + coalesce(run, 0) * sign,
            wait_sum = wait_sum + coalesce(wait, 0) * sign,
            run_hist[r] = run_hist[r] + sign,
            wait_hist[w] = wait_hist[w] + sign
        WHERE queue_id = a.queue_id AND outcome = a.outcome;
        EXIT WHEN FOUND;
        INSERT INTO attempt_totals (queue_id, outcome, run_hist, wait_hist)
        VALUES (a.queue_id, a.outcome, array_fill(0::bigint, ARRAY[16]),
                array_fill(0::bigint, ARRAY[15]))
        ON CONFLICT (queue_id, outcome) DO NOTHING;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION usher_attempt_line() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.queue_id IS NULL THEN
        SELECT queue_id INTO NEW.queue_id FROM executions WHERE id = NEW.execution_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION usher_attempt_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM usher_attempt_totals_add(OLD, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM usher_attempt_totals_add(NEW, 1);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION usher_attempt_totals_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM attempt_totals;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION usher_attempt_totals_rebuild() RETURNS void LANGUAGE sql AS $$
    DELETE FROM attempt_totals;
    INSERT INTO attempt_totals (queue_id, outcome, attempts, retries, run_sum, wait_sum,
                                run_hist, wait_hist)
    SELECT queue_id, outcome, count(*), count(*) FILTER (WHERE attempt > 1),
           coalesce(sum(run), 0), coalesce(sum(wait), 0),
           ARRAY[count(*) FILTER (WHERE r = 1), count(*) FILTER (WHERE r = 2), count(*) FILTER (WHERE r = 3), count(*) FILTER (WHERE r = 4), count(*) FILTER (WHERE r = 5), count(*) FILTER (WHERE r = 6), count(*) FILTER (WHERE r = 7), count(*) FILTER (WHERE r = 8), count(*) FILTER (WHERE r = 9), count(*) FILTER (WHERE r = 10), count(*) FILTER (WHERE r = 11), count(*) FILTER (WHERE r = 12), count(*) FILTER (WHERE r = 13), count(*) FILTER (WHERE r = 14), count(*) FILTER (WHERE r = 15), count(*) FILTER (WHERE r = 16)], ARRAY[count(*) FILTER (WHERE w = 1), count(*) FILTER (WHERE w = 2), count(*) FILTER (WHERE w = 3), count(*) FILTER (WHERE w = 4), count(*) FILTER (WHERE w = 5), count(*) FILTER (WHERE w = 6), count(*) FILTER (WHERE w = 7), count(*) FILTER (WHERE w = 8), count(*) FILTER (WHERE w = 9), count(*) FILTER (WHERE w = 10), count(*) FILTER (WHERE w = 11), count(*) FILTER (WHERE w = 12), count(*) FILTER (WHERE w = 13), count(*) FILTER (WHERE w = 14), count(*) FILTER (WHERE w = 15)]
    FROM (
        SELECT queue_id, outcome, attempt, run, wait,
               usher_bucket(run, ARRAY[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600]::numeric[]) AS r,
               usher_bucket(wait, ARRAY[0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600]::numeric[]) AS w
        FROM attempts CROSS JOIN LATERAL (
            SELECT extract(epoch FROM finished_at - started_at) AS run,
                   extract(epoch FROM started_at - queued_at) AS wait
        ) v
        OFFSET 0  -- bucket each row once, not once per FILTER below
    ) s
    GROUP BY queue_id, outcome;
$$;

-- A value for a list: a big one stays in Postgres, and the list says how big it is
-- (an execution's own page shows it whole).
CREATE OR REPLACE FUNCTION usher_capped_json(value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN octet_length(value::text) > 4096
        THEN jsonb_build_object('_truncated', true, 'bytes', octet_length(value::text))
        ELSE value END
$$;

CREATE OR REPLACE FUNCTION usher_capped_text(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN octet_length(value) > 4096
        -- ::text: text || integer is only STABLE, which would keep this IMMUTABLE function
        -- from being inlined into the lists that call it.
        THEN left(value, 1000) || '… (truncated: ' || octet_length(value)::text || ' bytes)'
        ELSE value END
$$;

-- When a line's oldest waiting execution joined it. Its oldest is its lowest seq (seq is
-- taken under the line's lock, with enqueued_at read under the same lock, so both grow
-- together). The waiting index is (queue_id, priority DESC, seq): one probe per distinct
-- priority finds it, where min(enqueued_at) would read every waiting row of the line.
CREATE OR REPLACE FUNCTION usher_oldest_queued(p_queue_id integer) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH RECURSIVE prios(p) AS (
        (SELECT priority FROM executions
         WHERE queue_id = p_queue_id AND status = 'queued' ORDER BY priority DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT priority FROM executions
                WHERE queue_id = p_queue_id AND status = 'queued' AND priority < prios.p
                ORDER BY priority DESC LIMIT 1)
        FROM prios WHERE prios.p IS NOT NULL
    )
    SELECT min(w.enqueued_at) FROM prios
    CROSS JOIN LATERAL (
        SELECT enqueued_at FROM executions
        WHERE queue_id = p_queue_id AND status = 'queued' AND priority = prios.p
        ORDER BY seq LIMIT 1
    ) w
$$;

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
        (SELECT e.id, e.priority, e.seq, e.status FROM execution_state e
         WHERE e.queue_id = p_queue_id AND e.status = 'queued'
         ORDER BY e.priority DESC, e.seq LIMIT (SELECT n FROM free))
        UNION ALL
        (SELECT e.id, e.priority, e.seq, e.status FROM execution_state e
         WHERE e.queue_id = p_queue_id AND e.status = 'retrying' AND NOT e.holds_slot
           AND e.not_before <= (SELECT ts FROM now)
         ORDER BY e.priority DESC, e.seq LIMIT (SELECT n FROM free))
        ORDER BY 2 DESC, 3 LIMIT (SELECT n FROM free)
    ),
    granted AS (
        UPDATE execution_state e SET status = 'scheduled',
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
        UPDATE execution_state e SET
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
            result = p_result, error = p_error, lease_expires_at = NULL,
            -- A retry that keeps its slot keeps its levels' slots too.
            levels = CASE WHEN p_hold THEN e.levels ELSE '{}' END
        WHERE e.id = p_id AND e.attempt = p_attempt AND e.status IN ('scheduled', 'running')
          AND (NOT p_lease_expired OR e.lease_expires_at < ts)
        RETURNING e.id, e.queue_id, e.not_before
    ),
    freed AS (
        -- The levels it held (the snapshot from before the UPDATE), after its line: the
        -- lock order of docs/architecture.md. The caller holds the group's lock.
        UPDATE levels l SET active = l.active - 1, last_updated = ts
        FROM execution_state e
        WHERE e.id = p_id AND NOT p_hold AND l.id = ANY(e.levels)
          AND EXISTS (SELECT 1 FROM done)
    ),
    history AS (
        -- Sub-statements see the snapshot from before the UPDATE: the attempt's own times.
        INSERT INTO attempts (execution_id, queue_id, attempt, outcome, queued_at,
                              scheduled_at, started_at, finished_at, worker, error, kept_slot)
        SELECT e.id, e.queue_id, p_attempt, p_outcome, e.queued_at, e.scheduled_at,
               e.started_at, ts, e.worker, p_error, p_hold
        FROM execution_state e WHERE e.id = p_id AND EXISTS (SELECT 1 FROM done)
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
-- line without rate limits or levels (no retry, rate or level policy to evaluate in Python). kind is 'done',
-- 'stale' (nothing changed: not this attempt's to report) or 'policy' (nothing changed:
-- the caller must take the full path in policies.admission.release). The line's limit is
-- the one policies.limits.store wrote on the action; NULL there means the settings' default.
DECLARE
    line_id integer;
    info record;
    released boolean;
BEGIN
    SELECT e.queue_id INTO line_id FROM execution_state e WHERE e.id = p_id;
    IF line_id IS NULL THEN
        RETURN QUERY SELECT 'stale'::text, NULL::integer, NULL::text, NULL::integer,
            NULL::bigint[], NULL::integer[];
        RETURN;
    END IF;
    -- The line's lock before any execution row of it, as everywhere in admission.
    SELECT a.ref::text AS ref, a.timeout_s, a.resolved_concurrency, a.resolved_rate_limited,
        a.paused_at IS NOT NULL AS paused, q.level_group
    INTO info
    FROM queues q JOIN actions a ON a.id = q.action_id
    WHERE q.id = line_id
    FOR NO KEY UPDATE OF q;
    -- A line of a level group is admitted across its group, under the group's lock, which
    -- comes before the line's: the full path (policies.levels) does that.
    IF info.resolved_rate_limited OR info.level_group IS NOT NULL THEN
        RETURN QUERY SELECT 'policy'::text, line_id, info.ref, info.timeout_s,
            NULL::bigint[], NULL::integer[];
        RETURN;
    END IF;
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
    FROM usher_admit(line_id, coalesce(info.resolved_concurrency, p_default_limit), NULL)
        WITH ORDINALITY AS g(execution_id, attempt, n);
END
$$;

-- Execution events (migration 0013): a final status emits an usher.execution event in the
-- transaction that set it, whichever statement set it (usher_release, a cancel, an expiry).
-- The trigger executions_emit runs this; it is enabled only while an enabled rule listens
-- (usher_execution_events_sync), so with none the hot path runs no trigger at all.
-- The new event's id is added to the transaction's setting usher.emitted: the writer reads
-- it before commit (the finish and release statements select it) and publishes the event
-- after; one it misses is found by the sweeper as an unprocessed event.
CREATE OR REPLACE FUNCTION usher_execution_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cause record;
    ref text;
    line text;
    asked record;
    new_id bigint;
BEGIN
    -- What was asked is the request's (NEW is the execution's state row).
    SELECT r.action_id, r.parameters INTO asked FROM execution_requests r WHERE r.id = NEW.id;
    -- The enforcement that made it, if a rule did; its event's depth is the chain's so far.
    SELECT en.rule_ref, en.event_id, ev.depth INTO cause
    FROM enforcements en JOIN events ev ON ev.id = en.event_id
    WHERE en.execution_id = NEW.id
    ORDER BY en.id LIMIT 1;
    SELECT a.ref, nullif(q.partition_key, '') INTO ref, line
    FROM actions a JOIN queues q ON q.id = NEW.queue_id WHERE a.id = asked.action_id;
    INSERT INTO events (trigger, payload, depth)
    VALUES ('usher.execution', jsonb_build_object(
        'execution_id', NEW.id, 'action', ref, 'status', NEW.status,
        'attempt', NEW.attempt, 'parameters', asked.parameters,
        -- Whole: a result and an error are bounded where they are written (tasks.signals).
        'result', NEW.result, 'error', NEW.error,
        'line', line, 'rule', cause.rule_ref, 'event_id', cause.event_id
    ), coalesce(cause.depth, 0) + 1)
    RETURNING id INTO new_id;
    PERFORM set_config('usher.emitted', concat_ws(',',
        nullif(current_setting('usher.emitted', true), ''), new_id::text), true);
    RETURN NULL;
END
$$;

-- The table whose status changes executions_emit follows: execution_state since migration
-- 0025, the executions table before it (the migrations in between load this file too).
CREATE OR REPLACE FUNCTION usher_emitting_table() RETURNS regclass
LANGUAGE sql STABLE AS $$
    SELECT coalesce(to_regclass('execution_state'), to_regclass('executions'))
$$;

-- After every statement that writes rules (a pack load): the trigger executions_emit is
-- enabled exactly while an enabled rule is on usher.execution. ALTER TABLE takes a lock
-- that waits for the writers of executions in flight; a pack load that flips the state
-- takes it first (policies.packs), before any row lock a writer could wait on.
CREATE OR REPLACE FUNCTION usher_execution_events_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    wanted boolean := EXISTS (
        SELECT 1 FROM rules WHERE trigger = 'usher.execution' AND enabled);
    enabled boolean := usher_execution_events_enabled();
BEGIN
    IF wanted AND NOT enabled THEN
        EXECUTE 'ALTER TABLE ' || usher_emitting_table() || ' ENABLE TRIGGER executions_emit';
    ELSIF enabled AND NOT wanted THEN
        EXECUTE 'ALTER TABLE ' || usher_emitting_table() || ' DISABLE TRIGGER executions_emit';
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION usher_execution_events_enabled() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT t.tgenabled <> 'D' FROM pg_trigger t
                     WHERE t.tgrelid = usher_emitting_table() AND t.tgname = 'executions_emit'),
                    false)
$$;

