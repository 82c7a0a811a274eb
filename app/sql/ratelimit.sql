-- The rate limiter's statements (policies.ratelimit), all run under the line's lock. A
-- rate-limited line numbers its grants (queues.rate_grants_total) and records the last ones
-- as rate_grants (queue_id, n, granted_at); granted_at grows with n.

-- name: rate_windows
-- Per window (count, per_s), in the order given: before, the number of the last grant made
-- at or before now - per_s (those after it are in the window), and edge_at, when grant
-- total + 1 - count was made (the window frees a grant per_s after it). Two index probes per
-- window, whatever its count. recorded: the line's record is complete.
WITH now AS (SELECT clock_timestamp() AS ts)
SELECT q.rate_grants_total AS total, q.rate_grants_pruned AS pruned,
       (q.rate_recorded_from IS NOT NULL
        AND q.rate_recorded_from >= coalesce(a.rate_limited_since, '-infinity')) AS recorded,
       (SELECT g.n FROM rate_grants g
        WHERE g.queue_id = q.id AND g.n > q.rate_grants_pruned
          AND g.granted_at <= (SELECT ts FROM now) - make_interval(secs => w.per_s)
        ORDER BY g.granted_at DESC, g.n DESC LIMIT 1) AS before,
       (SELECT g.granted_at FROM rate_grants g
        WHERE g.queue_id = q.id AND g.n = q.rate_grants_total + 1 - w.count) AS edge_at
FROM queues q JOIN actions a ON a.id = q.action_id,
     unnest(CAST(:counts AS bigint[]), CAST(:per_s AS double precision[]))
         WITH ORDINALITY AS w(count, per_s, i)
WHERE q.id = :queue_id
ORDER BY w.i

-- name: record_rate_grants
-- Number these grants (in the order given) after the line's last, record them, and prune
-- the rows no window needs any more (all but the last keep): the range just above the last
-- pruned, at most batch rows, never one of the new ones, so the DELETE reads no dead index
-- entry. Sub-statements share one snapshot: 'line' reads the row as it was before.
WITH granted AS (
    SELECT o.n, e.scheduled_at
    FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY AS o(id, n)
    JOIN execution_state e ON e.id = o.id
),
line AS (
    SELECT q.rate_grants_total AS base, q.rate_grants_pruned AS pruned,
           q.rate_grants_total + (SELECT count(*) FROM granted) AS total
    FROM queues q WHERE q.id = :queue_id
),
cut AS (
    SELECT base, pruned, total,
           GREATEST(pruned, LEAST(total - :keep, pruned + :batch, base)) AS upto
    FROM line
),
counted AS (
    UPDATE queues q SET rate_grants_total = cut.total, rate_grants_pruned = cut.upto
    FROM cut WHERE q.id = :queue_id
),
added AS (
    INSERT INTO rate_grants (queue_id, n, granted_at)
    SELECT :queue_id, cut.base + g.n, g.scheduled_at FROM granted g, cut
)
DELETE FROM rate_grants r USING cut
WHERE r.queue_id = :queue_id AND r.n > cut.pruned AND r.n <= cut.upto

-- name: clear_rate_grants
DELETE FROM rate_grants WHERE queue_id = :queue_id

-- name: seed_rate_grants
-- The line's record filled from its history, as the limiter read it before numbered grants
-- (migration 0017): its last count grants within per_s seconds, each attempt's recorded
-- grant (attempts.scheduled_at) and the grant of a current attempt not recorded there yet,
-- numbered 1.. oldest first. Once per line, and again when it becomes rate-limited anew or
-- its largest count grows (clear_rate_grants first).
WITH history AS (
    SELECT s, row_number() OVER (ORDER BY s) AS n FROM (
        SELECT s FROM (
            SELECT t.scheduled_at AS s FROM attempts t JOIN execution_state e ON e.id = t.execution_id
            WHERE e.queue_id = :queue_id
              AND t.scheduled_at > clock_timestamp() - make_interval(secs => :per_s)
            UNION ALL
            SELECT e.scheduled_at FROM execution_state e
            WHERE e.queue_id = :queue_id
              AND e.scheduled_at > clock_timestamp() - make_interval(secs => :per_s)
              AND NOT EXISTS (SELECT 1 FROM attempts t
                              WHERE t.execution_id = e.id AND t.attempt = e.attempt)
        ) grants ORDER BY s DESC LIMIT :count
    ) recent
),
line AS (
    UPDATE queues SET rate_grants_total = (SELECT count(*) FROM history),
        rate_grants_pruned = 0, rate_recorded_from = clock_timestamp()
    WHERE id = :queue_id
)
INSERT INTO rate_grants (queue_id, n, granted_at)
SELECT :queue_id, n, s FROM history
