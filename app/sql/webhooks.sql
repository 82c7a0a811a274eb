-- Webhooks (policies.webhooks): the webhook a request names, its deliveries, its counts.
-- A delivery makes one event because its row in webhook_deliveries is inserted once: the
-- primary key (webhook_id, delivery_id) is the whole guarantee.

-- name: webhook_by_ref
SELECT id, ref, trigger, kind, secret_name, header, prefix, delivery_header
FROM webhooks WHERE ref = :ref

-- name: claim_webhook_delivery
-- A row only if this statement inserted it. A concurrent claim of the same id makes it wait
-- for that transaction: committed, this one inserts nothing (and reads the first event);
-- rolled back, this one inserts. KEY SHARE on the webhook: a pack load removing it waits,
-- and a webhook removed already claims nothing.
WITH w AS (SELECT id FROM webhooks WHERE id = :w FOR KEY SHARE)
INSERT INTO webhook_deliveries (webhook_id, delivery_id)
SELECT id, :d FROM w
ON CONFLICT DO NOTHING
RETURNING webhook_id

-- name: set_webhook_delivery_event
UPDATE webhook_deliveries SET event_id = :e WHERE webhook_id = :w AND delivery_id = :d

-- name: webhook_delivery_event
SELECT event_id FROM webhook_deliveries WHERE webhook_id = :w AND delivery_id = :d

-- name: count_webhook_request
INSERT INTO webhook_requests (webhook, outcome, count) VALUES (:w, :o, :n)
ON CONFLICT (webhook, outcome) DO UPDATE SET count = webhook_requests.count + excluded.count

-- name: list_webhooks
SELECT w.ref, p.name AS pack, w.name, w.description, w.trigger, w.kind,
       w.secret_name AS secret, w.header, w.prefix, w.delivery_header,
       CAST(coalesce(sum(r.count) FILTER (WHERE r.outcome IN ('accepted', 'duplicate')), 0)
            AS bigint) AS accepted,
       CAST(coalesce(sum(r.count) FILTER (WHERE r.outcome NOT IN ('accepted', 'duplicate')), 0)
            AS bigint) AS refused
FROM webhooks w
JOIN packs p ON p.id = w.pack_id
LEFT JOIN webhook_requests r ON r.webhook = w.ref
GROUP BY w.id, p.name
ORDER BY w.ref

-- name: metrics_webhook_requests
SELECT webhook, outcome, count FROM webhook_requests ORDER BY webhook, outcome
