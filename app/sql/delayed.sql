-- Delayed runs (policies.intake, policies.delayed): an execution asked for a later time
-- waits as 'delayed', with no seq, until it falls due; then it joins its line (its seq and
-- queued_at taken then, under the line's lock) and is admitted like any other.

-- name: database_now
-- The database's clock: a delay counts from it, as every time Usher records does.
SELECT clock_timestamp()

-- name: execution_ids
-- Ids for a batch's delayed executions, taken before their insert so that each is known by
-- its place in the request (they join in (run_at, id) order: the request's, at one time).
SELECT nextval('execution_requests_id_seq') FROM generate_series(1, :n)

-- name: insert_delayed
-- The delayed executions of a batch in one statement. enqueued_at is the request's time
-- until the execution joins its line, when it becomes the join's.
WITH batch AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
        AS r(i bigint, a integer, q integer, p integer, d jsonb, t timestamptz, r bigint,
             b text, o bigint)
),
requests AS (
    INSERT INTO execution_requests (id, action_id, queue_id, parameters, enqueued_at,
                                    replay_of, requested_by, rerun_of)
    SELECT i, a, q, d, clock_timestamp(), r, b, o FROM batch ORDER BY i
)
INSERT INTO execution_state (id, queue_id, seq, priority, status, run_at)
SELECT i, q, NULL, p, 'delayed', t FROM batch ORDER BY i

-- name: due_delayed
-- Delayed executions due now, oldest time first (the partial index on (run_at, id) of the
-- delayed rows): which lines to visit. Read without a lock: each line's join takes its
-- line's lock and checks again that they are still delayed.
SELECT id, queue_id FROM execution_state
WHERE status = 'delayed' AND run_at <= clock_timestamp()
ORDER BY run_at, id LIMIT :limit

-- name: join_line
-- Under the line's lock: these delayed executions join it in (run_at, id) order, as many as
-- it has room for (max_queue_length less those waiting), each with the line's next seq and
-- one join time as enqueued_at and queued_at. One already joined, cancelled or rejected
-- (another beat, a cancel) is no longer 'delayed' and is left alone.
WITH now AS (SELECT clock_timestamp() AS ts),
line AS (
    SELECT next_seq, GREATEST(CAST(:most AS integer) - queue_length, 0) AS room
    FROM queues WHERE id = :queue_id
),
due AS (
    SELECT d.id, row_number() OVER (ORDER BY d.run_at, d.id) AS n FROM (
        SELECT id, run_at FROM execution_state
        WHERE id = ANY(CAST(:ids AS bigint[])) AND queue_id = :queue_id
          AND status = 'delayed'
        ORDER BY run_at, id LIMIT (SELECT room FROM line)
    ) d
),
joined AS (
    UPDATE execution_state e SET status = 'queued', seq = (SELECT next_seq FROM line) + due.n,
        queued_at = (SELECT ts FROM now)
    FROM due WHERE e.id = due.id
    RETURNING e.id, e.seq
),
asked AS (
    -- The one change of a request after its insert: a delayed run's place and time of
    -- joining.
    UPDATE execution_requests r SET seq = j.seq, enqueued_at = (SELECT ts FROM now)
    FROM joined j WHERE r.id = j.id
)
SELECT id, seq FROM joined

-- name: reject_delayed
-- Under the line's lock: these delayed executions found their line full when they fell
-- due; they end 'rejected' with the reason, as a request to a full line is refused.
UPDATE execution_state SET status = 'rejected', finished_at = clock_timestamp(), error = :reason
WHERE id = ANY(CAST(:ids AS bigint[])) AND queue_id = :queue_id AND status = 'delayed'
RETURNING id

-- name: next_delayed_due
-- Seconds until the next delayed execution falls due (negative: due already), NULL if none:
-- how long a beat may sleep.
SELECT extract(epoch FROM min(run_at) - clock_timestamp()) FROM execution_state
WHERE status = 'delayed'
