-- forgea_gh SQLite schema: the single source of the current shape.
--
-- Start-up applies this file to an empty database and the ordered files in
-- forgea_gh/store/migrations/ to an older one; the version it reaches is the
-- `PRAGMA user_version` at the end of this file. Times are UTC ISO-8601 text
-- of fixed width ('2026-11-23T02:00:00.000000Z'), so they sort as instants.

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

-- Version 2: the lab domain. Users work through sessions of a lab version;
-- a session is bound to its GitHub repository by repository id; every
-- pushed commit is a row of the append-only ledger (lab_attempts); the
-- lifecycle allowed by lab_status_transitions is enforced by a trigger.

CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    login      TEXT    NOT NULL UNIQUE COLLATE NOCASE,   -- GitHub logins ignore case
    github_id  INTEGER UNIQUE,
    created_at TEXT    NOT NULL
);

CREATE TABLE labs (
    id                  INTEGER PRIMARY KEY,
    slug                TEXT NOT NULL UNIQUE
                        CHECK (length(slug) BETWEEN 1 AND 64 AND slug NOT GLOB '*[^a-z0-9-]*'),
    title               TEXT NOT NULL,
    template_repository TEXT NOT NULL,                   -- owner/name
    created_at          TEXT NOT NULL
);

-- Immutable once written: a session points at exactly what it started from.
CREATE TABLE lab_versions (
    id           INTEGER PRIMARY KEY,
    lab_id       INTEGER NOT NULL REFERENCES labs (id),
    version      TEXT    NOT NULL CHECK (length(version) BETWEEN 1 AND 64),
    template_ref TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    UNIQUE (lab_id, version),
    UNIQUE (id, lab_id)                                  -- target of lab_sessions' composite key
);

CREATE TRIGGER lab_versions_no_update BEFORE UPDATE ON lab_versions
BEGIN
    SELECT RAISE(ABORT, 'lab_versions are immutable: a lab version cannot be changed');
END;

CREATE TRIGGER lab_versions_no_delete BEFORE DELETE ON lab_versions
BEGIN
    SELECT RAISE(ABORT, 'lab_versions are immutable: a lab version cannot be deleted');
END;

-- The single table of allowed lifecycle moves (staying in a status is always allowed).
CREATE TABLE lab_status_transitions (
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    PRIMARY KEY (from_status, to_status)
) WITHOUT ROWID;

INSERT INTO lab_status_transitions (from_status, to_status) VALUES
    ('PROVISIONING', 'ACTIVE'),
    ('PROVISIONING', 'PROVISIONING_FAILED'),
    ('ACTIVE', 'VERIFYING'),
    ('ACTIVE', 'ABANDONED'),
    ('ACTIVE', 'EXPIRED'),
    ('VERIFYING', 'COMPLETED'),
    ('VERIFYING', 'ACTIVE'),
    ('VERIFYING', 'ABANDONED'),
    ('VERIFYING', 'EXPIRED');

CREATE TABLE lab_sessions (
    id               INTEGER PRIMARY KEY,
    user_id          INTEGER NOT NULL REFERENCES users (id),
    lab_id           INTEGER NOT NULL REFERENCES labs (id),
    lab_version_id   INTEGER NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('PROVISIONING', 'ACTIVE', 'VERIFYING',
                         'COMPLETED', 'PROVISIONING_FAILED', 'ABANDONED', 'EXPIRED')),
    user_fork_url    TEXT,
    preview_url      TEXT,
    started_at       TEXT    NOT NULL,
    last_activity_at TEXT    NOT NULL,
    completed_at     TEXT,
    version          INTEGER NOT NULL DEFAULT 1,          -- optimistic concurrency
    -- The version must belong to the session's lab.
    FOREIGN KEY (lab_version_id, lab_id) REFERENCES lab_versions (id, lab_id)
);
CREATE INDEX lab_sessions_user ON lab_sessions (user_id);
CREATE INDEX lab_sessions_fork ON lab_sessions (user_fork_url);
CREATE INDEX lab_sessions_idle ON lab_sessions (status, last_activity_at);

CREATE TRIGGER lab_sessions_start BEFORE INSERT ON lab_sessions
WHEN NEW.status NOT IN ('PROVISIONING', 'ACTIVE')
BEGIN
    SELECT RAISE(ABORT, 'lab_sessions: a session starts PROVISIONING or ACTIVE');
END;

CREATE TRIGGER lab_sessions_lifecycle BEFORE UPDATE OF status ON lab_sessions
WHEN NEW.status <> OLD.status AND NOT EXISTS (
    SELECT 1 FROM lab_status_transitions WHERE from_status = OLD.status AND to_status = NEW.status)
BEGIN
    SELECT RAISE(ABORT, 'lab_sessions: status change not allowed by lab_status_transitions');
END;

CREATE TRIGGER lab_sessions_identity BEFORE UPDATE OF user_id, lab_id, lab_version_id ON lab_sessions
WHEN NEW.user_id <> OLD.user_id OR NEW.lab_id <> OLD.lab_id OR NEW.lab_version_id <> OLD.lab_version_id
BEGIN
    SELECT RAISE(ABORT, 'lab_sessions: user, lab and version of a session cannot change');
END;

-- Webhooks bind to sessions by GitHub's repository id, never by URL.
CREATE TABLE github_repo_mappings (
    id               INTEGER PRIMARY KEY,
    provider_repo_id INTEGER NOT NULL UNIQUE,
    full_name        TEXT    NOT NULL,
    html_url         TEXT    NOT NULL,
    installation_id  INTEGER,
    lab_session_id   INTEGER NOT NULL UNIQUE REFERENCES lab_sessions (id),
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
);

-- The ledger: one row per commit per session. Append-only.
CREATE TABLE lab_attempts (
    id               INTEGER PRIMARY KEY,
    lab_session_id   INTEGER NOT NULL REFERENCES lab_sessions (id),
    commit_sha       TEXT    NOT NULL,
    ref              TEXT    NOT NULL,
    branch           TEXT,
    author_name      TEXT,
    author_email     TEXT,
    author_login     TEXT,
    committer_name   TEXT,
    committer_email  TEXT,
    committer_login  TEXT,
    message          TEXT    NOT NULL,
    added            TEXT    NOT NULL DEFAULT '[]',       -- JSON arrays of paths
    modified         TEXT    NOT NULL DEFAULT '[]',
    removed          TEXT    NOT NULL DEFAULT '[]',
    commit_timestamp TEXT,
    pushed_at        TEXT,
    delivery_guid    TEXT    NOT NULL,
    forced           INTEGER NOT NULL CHECK (forced IN (0, 1)),
    recorded_at      TEXT    NOT NULL,
    UNIQUE (lab_session_id, commit_sha)
);

CREATE TRIGGER lab_attempts_no_update BEFORE UPDATE ON lab_attempts
BEGIN
    SELECT RAISE(ABORT, 'lab_attempts is append-only: a ledger row cannot be changed');
END;

CREATE TRIGGER lab_attempts_no_delete BEFORE DELETE ON lab_attempts
BEGIN
    SELECT RAISE(ABORT, 'lab_attempts is append-only: a ledger row cannot be deleted');
END;

-- Verification requests and results, many per session. Append-only.
CREATE TABLE verification_attempts (
    id              INTEGER PRIMARY KEY,
    lab_session_id  INTEGER NOT NULL REFERENCES lab_sessions (id),
    outcome         TEXT    NOT NULL CHECK (outcome IN ('requested', 'passed', 'failed', 'error')),
    commit_sha      TEXT,
    lab_attempt_id  INTEGER REFERENCES lab_attempts (id),
    summary         TEXT,
    details_url     TEXT,
    idempotency_key TEXT    NOT NULL UNIQUE,
    created_at      TEXT    NOT NULL
);
CREATE INDEX verification_attempts_session ON verification_attempts (lab_session_id, id);

CREATE TRIGGER verification_attempts_no_update BEFORE UPDATE ON verification_attempts
BEGIN
    SELECT RAISE(ABORT, 'verification_attempts is append-only: a verification cannot be changed');
END;

CREATE TRIGGER verification_attempts_no_delete BEFORE DELETE ON verification_attempts
BEGIN
    SELECT RAISE(ABORT, 'verification_attempts is append-only: a verification cannot be deleted');
END;

-- Admin API idempotency: the first answer to a key is the answer to every retry.
CREATE TABLE idempotency_keys (
    scope        TEXT    NOT NULL,                        -- e.g. 'POST /api/sessions'
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status_code  INTEGER NOT NULL,
    response     TEXT    NOT NULL,                        -- JSON
    created_at   TEXT    NOT NULL,
    PRIMARY KEY (scope, key)
);

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

-- Version 4: a delivery's webhook job is created by the database, in the
-- same statement that stores the delivery. The ingest path then stores a
-- whole batch with ONE statement (its own transaction: one fsync), and no
-- delivery can exist without its job. Version 5: the job's key is the
-- delivery's row id, which only grows (a GUID put every insert at a random
-- place in the key's unique index: one more page written per delivery).

-- The attempt budget of webhook jobs; start-up of a daemon that receives
-- webhooks writes its worker.max_attempts here (the most recently started
-- one wins). CLI commands and worker-only daemons leave it as it is.
CREATE TABLE queue_settings (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    webhook_max_attempts INTEGER NOT NULL CHECK (webhook_max_attempts >= 1)
);
INSERT INTO queue_settings (id, webhook_max_attempts) VALUES (1, 8);

CREATE TRIGGER deliveries_enqueue AFTER INSERT ON deliveries
BEGIN
    INSERT INTO jobs (kind, delivery_id, idempotency_key, max_attempts, next_attempt_at,
                      created_at, updated_at)
    VALUES ('webhook', NEW.id, 'webhook:' || NEW.id,
            (SELECT webhook_max_attempts FROM queue_settings WHERE id = 1),
            NEW.received_at, NEW.received_at, NEW.received_at);
END;

PRAGMA user_version = 5;
