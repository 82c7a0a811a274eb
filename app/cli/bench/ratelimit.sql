-- The rate-limit benchmark's history (app.cli.bench.ratelimit).

-- name: rate_history
-- A new line of the action with n finished executions granted over the last span_s
-- seconds, evenly, the newest just now: what the limiter counts as the line's past grants.
WITH line AS (
    INSERT INTO queues (action_id, partition_key, next_seq, total_enqueued, total_completed)
    VALUES (:action_id, '', :n, :n, :n)
    RETURNING id
)
INSERT INTO executions (action_id, queue_id, seq, priority, status, parameters, attempt,
                        enqueued_at, queued_at, scheduled_at, published_at, started_at,
                        finished_at)
SELECT :action_id, line.id, g, 0, 'succeeded', '{}', 1, t.ts, t.ts, t.ts, t.ts, t.ts, t.ts
FROM line, generate_series(1, :n) AS g
CROSS JOIN LATERAL (
    SELECT clock_timestamp() - make_interval(secs => :span_s * (:n - g) / :n) AS ts
) t

-- name: rate_action_id
SELECT id FROM actions WHERE ref = :ref

-- name: rate_analyze
ANALYZE
