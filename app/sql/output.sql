-- Live output (tasks.output writes, app.output reads).

-- name: output_append
-- One piece of a stream, from the worker's writer thread (autocommit, psycopg placeholders).
-- A piece written twice (a retried statement whose commit did land) is kept once.
INSERT INTO execution_output (execution_id, attempt, stream, seq, chunk)
VALUES (%(execution_id)s, %(attempt)s, %(stream)s, %(seq)s, %(chunk)s)
ON CONFLICT DO NOTHING

-- name: output_attempt
-- The execution's current attempt and status: which attempt "latest" means, and whether its
-- output can still grow.
SELECT attempt, status FROM execution_state WHERE id = :execution_id

-- name: output_text
-- An attempt's streams, their pieces in order (the primary key's index reads them).
SELECT stream, string_agg(chunk, '' ORDER BY seq) AS text
  FROM execution_output
 WHERE execution_id = :execution_id AND attempt = :attempt
 GROUP BY stream
