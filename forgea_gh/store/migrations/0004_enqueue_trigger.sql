-- Version 4: a delivery's webhook job is created by the database, in the
-- same statement that stores the delivery. The ingest path then stores a
-- whole batch with ONE statement (its own transaction: one fsync), and no
-- delivery can exist without its job.

-- The attempt budget of webhook jobs; start-up writes the configured
-- worker.max_attempts here (the most recently started daemon's value wins).
CREATE TABLE queue_settings (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    webhook_max_attempts INTEGER NOT NULL CHECK (webhook_max_attempts >= 1)
);
INSERT INTO queue_settings (id, webhook_max_attempts) VALUES (1, 8);

CREATE TRIGGER deliveries_enqueue AFTER INSERT ON deliveries
BEGIN
    INSERT INTO jobs (kind, delivery_id, idempotency_key, max_attempts, next_attempt_at,
                      created_at, updated_at)
    VALUES ('webhook', NEW.id, 'webhook:' || NEW.guid || ':' || NEW.hook_id,
            (SELECT webhook_max_attempts FROM queue_settings WHERE id = 1),
            NEW.received_at, NEW.received_at, NEW.received_at);
END;

PRAGMA user_version = 4;
