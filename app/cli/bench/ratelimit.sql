-- The rate-limit benchmark's history (app.cli.bench.ratelimit).

-- name: rate_history
-- A new line of the action with n finished executions granted over the last span_s
-- seconds, evenly, the newest just now: what the limiter counts as the line's past grants.
WITH line AS (
    INSERT INTO queues (action_id, partition_key, next_seq, total_enqueued, total_completed)
    VALUES (:action_id, '', :n, :n, :n)
    RETURNING id
), made AS MATERIALIZED (
    SELECT nextval('execution_requests_id_seq') AS id, line.id AS queue_id, g, t.ts
    FROM line, generate_series(1, :n) AS g
    CROSS JOIN LATERAL (
        SELECT clock_timestamp() - make_interval(secs => :span_s * (:n - g) / :n) AS ts
    ) t
), requests AS (
    INSERT INTO execution_requests (id, action_id, queue_id, seq, parameters, enqueued_at)
    SELECT id, :action_id, queue_id, g, '{}', ts FROM made
)
INSERT INTO execution_state (id, queue_id, seq, priority, status, attempt, queued_at,
                             scheduled_at, published_at, started_at, finished_at)
SELECT id, queue_id, g, 0, 'succeeded', 1, ts, ts, ts, ts, ts FROM made

-- name: rate_action_id
SELECT id FROM actions WHERE ref = :ref

-- name: rate_analyze
ANALYZE
