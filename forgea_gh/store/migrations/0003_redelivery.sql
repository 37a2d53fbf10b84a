-- Version 3: what the redelivery reconciler asked GitHub to send again.
-- GitHub never retries a failed delivery by itself; the reconciler asks for
-- each failed GUID that is not stored here, once per hook, and remembers it.

CREATE TABLE redelivery_requests (
    id                 INTEGER PRIMARY KEY,
    hook               TEXT    NOT NULL,               -- 'owner/repo#hook_id' or 'app'
    guid               TEXT    NOT NULL,
    github_delivery_id INTEGER NOT NULL,               -- GitHub's numeric delivery id
    event              TEXT,
    action             TEXT,
    outcome            TEXT    NOT NULL,               -- 'requested' or 'failed: <reason>'
    requested_at       TEXT    NOT NULL,
    UNIQUE (hook, guid)
);

PRAGMA user_version = 3;
