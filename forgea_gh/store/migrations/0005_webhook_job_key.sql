-- Version 5: a webhook job's idempotency key is its delivery's row id
-- ('webhook:<deliveries.id>'), no longer its GUID and hook id. The delivery
-- row already makes the pair unique; keyed by the GUID, every insert landed
-- at a random place in the key's unique index, one more page written to the
-- WAL for every delivery. Row ids only grow, so the index is appended to.
-- Jobs made before keep their keys.

DROP TRIGGER deliveries_enqueue;

CREATE TRIGGER deliveries_enqueue AFTER INSERT ON deliveries
BEGIN
    INSERT INTO jobs (kind, delivery_id, idempotency_key, max_attempts, next_attempt_at,
                      created_at, updated_at)
    VALUES ('webhook', NEW.id, 'webhook:' || NEW.id,
            (SELECT webhook_max_attempts FROM queue_settings WHERE id = 1),
            NEW.received_at, NEW.received_at, NEW.received_at);
END;

PRAGMA user_version = 5;
