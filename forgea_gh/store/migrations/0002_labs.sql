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

PRAGMA user_version = 2;
