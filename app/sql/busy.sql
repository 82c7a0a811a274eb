-- When the line is busy (policies.busy): a request that would not be granted at once, and
-- coalescing. The caller holds the line's lock, so these statements see every committed
-- change of the line and no other transaction changes it meanwhile.

-- name: line_counters
-- What a line holds now, under its lock: the next seq, the waiting, the slots taken.
SELECT next_seq, queue_length, active_count FROM queues WHERE id = :queue_id

-- name: waiting_twin
-- A waiting execution of the line whose parameters equal these (coalesce): the hash finds
-- it by the partial index ix_execution_state_waiting_params, the comparison makes sure; the
-- first in line if several.
SELECT e.id, e.seq FROM execution_state e JOIN execution_requests r ON r.id = e.id
WHERE e.queue_id = :queue_id AND e.status = 'queued' AND e.params_hash = :hash
  AND r.parameters = CAST(:parameters AS jsonb)
ORDER BY e.priority DESC, e.seq
LIMIT 1

-- name: line_others
-- The other executions of the line that a when_busy request ends: the waiting ones
-- (replace and cancel_running), and with :active also those holding or about to hold a
-- slot (cancel_running: scheduled, running, and a retry backing off, which would rejoin
-- ahead of the new one). Oldest first; delayed ones are not in line yet.
SELECT id, status, attempt FROM execution_state
WHERE queue_id = :queue_id AND id <> :keep
  AND (status = 'queued' OR (:active AND status IN ('scheduled', 'running', 'retrying')))
ORDER BY id
