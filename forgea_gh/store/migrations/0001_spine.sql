-- Version 1: the spine (deliveries, jobs, job_errors, audit_log).
-- The baseline that later migrations build on; never edit it.

-- One row per inbound webhook delivery, exactly as it arrived. Immutable:
-- rows are only ever deleted, by retention pruning of completed work.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    guid            TEXT    NOT NULL,                -- X-GitHub-Delivery
    hook_id         INTEGER NOT NULL DEFAULT 0,      -- X-GitHub-Hook-ID, 0 when absent
    event           TEXT    NOT NULL,                -- X-GitHub-Event
    action          TEXT,
    installation_id INTEGER,
    repository_id   INTEGER,
    headers         TEXT    NOT NULL,                -- JSON object of the kept headers
    content_type    TEXT    NOT NULL CHECK (content_type IN
                        ('application/json', 'application/x-www-form-urlencoded')),
    body            BLOB    NOT NULL,                -- the raw bytes GitHub signed
    body_sha256     TEXT    NOT NULL,
    signature_mode  TEXT    NOT NULL DEFAULT 'raw' CHECK (signature_mode IN ('raw', 'reserialized')),
    received_at     TEXT    NOT NULL,
    -- GitHub shares one GUID across all hooks of an event, and a redelivery
    -- reuses the GUID: the pair is the delivery's identity.
    UNIQUE (guid, hook_id)
);

CREATE TRIGGER deliveries_immutable BEFORE UPDATE ON deliveries
BEGIN
    SELECT RAISE(ABORT, 'deliveries are immutable: a stored delivery cannot be changed');
END;

-- The one queue: inbound deliveries to process and, later, outbound work.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL,                -- 'webhook', ...
    delivery_id     INTEGER REFERENCES deliveries (id),
    payload         TEXT,                            -- JSON, for outbound jobs
    idempotency_key TEXT    NOT NULL UNIQUE,
    status          TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN
                        ('pending', 'processing', 'completed', 'failed', 'dead_letter')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts    INTEGER NOT NULL CHECK (max_attempts >= 1),
    next_attempt_at TEXT    NOT NULL,
    locked_by       TEXT,
    locked_until    TEXT,
    last_error      TEXT,
    outcome         TEXT,                            -- how a completed job ended: 'handled', 'ignored: ...'
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    completed_at    TEXT,
    CHECK ((status = 'processing') = (locked_until IS NOT NULL)),
    CHECK (kind <> 'webhook' OR delivery_id IS NOT NULL)
);

-- The claim query reads due work in order; only claimable rows are indexed.
CREATE INDEX jobs_due ON jobs (next_attempt_at, id) WHERE status IN ('pending', 'failed');
CREATE INDEX jobs_leased ON jobs (locked_until) WHERE status = 'processing';
CREATE INDEX jobs_status_kind ON jobs (status, kind);
CREATE INDEX jobs_delivery ON jobs (delivery_id);
CREATE INDEX jobs_completed ON jobs (completed_at) WHERE status = 'completed';

-- Every failed attempt of every job, in order. Rows are never changed; they
-- go only with their job when retention prunes it.
CREATE TABLE job_errors (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    error_class TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    occurred_at TEXT    NOT NULL
);
CREATE INDEX job_errors_job ON job_errors (job_id, id);

CREATE TRIGGER job_errors_append_only BEFORE UPDATE ON job_errors
BEGIN
    SELECT RAISE(ABORT, 'job_errors is append-only: an error row cannot be changed');
END;

-- What the daemon and its operators did, and why. Append-only.
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY,
    occurred_at   TEXT NOT NULL,
    actor         TEXT NOT NULL,                     -- 'processor', 'receiver', 'cli:replay', ...
    action        TEXT NOT NULL,                     -- 'job.dead_lettered', 'job.replayed', ...
    subject_type  TEXT,
    subject_id    TEXT,
    delivery_guid TEXT,
    detail        TEXT NOT NULL DEFAULT '{}'         -- JSON object
);
CREATE INDEX audit_log_subject ON audit_log (subject_type, subject_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: an audit row cannot be changed');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: an audit row cannot be deleted');
END;

PRAGMA user_version = 1;
