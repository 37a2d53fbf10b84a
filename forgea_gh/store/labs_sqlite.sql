-- Named queries of the lab domain on SQLite (forgea_gh/store/labs_sqlite.py).

-- name: insert_job
-- An outbound job; an existing idempotency key means it was queued before.
INSERT INTO jobs (kind, payload, idempotency_key, max_attempts, next_attempt_at,
                  created_at, updated_at)
VALUES (:kind, :payload, :key, :max_attempts, :now, :now, :now)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id;

-- name: upsert_user
-- A user by login (case-insensitive); a GitHub id fills in when first known.
INSERT INTO users (login, github_id, created_at) VALUES (:login, :github_id, :now)
ON CONFLICT (login) DO UPDATE SET github_id = coalesce(users.github_id, excluded.github_id)
RETURNING id, login, github_id;

-- name: lab_by_slug
-- One lab.
SELECT * FROM labs WHERE slug = :slug;

-- name: insert_lab
-- A new lab (the slug is unique).
INSERT INTO labs (slug, title, template_repository, created_at)
VALUES (:slug, :title, :template_repository, :now)
RETURNING *;

-- name: lab_version
-- One version of a lab by its label.
SELECT * FROM lab_versions WHERE lab_id = :lab_id AND version = :version;

-- name: latest_lab_version
-- The most recently added version of a lab.
SELECT * FROM lab_versions WHERE lab_id = :lab_id ORDER BY id DESC LIMIT 1;

-- name: insert_lab_version
-- A new, immutable lab version.
INSERT INTO lab_versions (lab_id, version, template_ref, created_at)
VALUES (:lab_id, :version, :template_ref, :now)
RETURNING *;

-- name: insert_session
-- A new session, PROVISIONING or ACTIVE (a trigger refuses anything else).
INSERT INTO lab_sessions (user_id, lab_id, lab_version_id, status, user_fork_url,
                          started_at, last_activity_at)
VALUES (:user_id, :lab_id, :lab_version_id, :status, :user_fork_url, :now, :now)
RETURNING id;

-- name: session_columns
-- The SELECT list and joins every session query shares (used as a prefix).
SELECT s.id, s.status, s.version, s.user_id, u.login AS user_login, u.github_id AS user_github_id,
       s.lab_id, l.slug AS lab_slug, s.lab_version_id, v.version AS lab_version,
       s.user_fork_url, s.preview_url, s.started_at, s.last_activity_at, s.completed_at,
       m.provider_repo_id, m.full_name, m.html_url, m.installation_id
FROM lab_sessions AS s
JOIN users AS u ON u.id = s.user_id
JOIN labs AS l ON l.id = s.lab_id
JOIN lab_versions AS v ON v.id = s.lab_version_id
LEFT JOIN github_repo_mappings AS m ON m.lab_session_id = s.id;

-- name: insert_mapping
-- Bind a repository (by GitHub id) to a session.
INSERT INTO github_repo_mappings (provider_repo_id, full_name, html_url, installation_id,
                                  lab_session_id, created_at, updated_at)
VALUES (:provider_repo_id, :full_name, :html_url, :installation_id, :session_id, :now, :now);

-- name: rename_mapping
-- A renamed or transferred repository keeps its id; its names follow.
UPDATE github_repo_mappings
SET full_name = :full_name, html_url = :html_url,
    installation_id = coalesce(:installation_id, installation_id), updated_at = :now
WHERE provider_repo_id = :provider_repo_id;

-- name: set_status
-- Optimistic: only from the row version the caller read.
UPDATE lab_sessions
SET status = :status, version = version + 1, last_activity_at = :now,
    completed_at = CASE WHEN :status = 'COMPLETED' THEN :now ELSE completed_at END
WHERE id = :id AND version = :version;

-- name: insert_attempt
-- One ledger row; a commit the session has already recorded adds nothing.
INSERT INTO lab_attempts (lab_session_id, commit_sha, ref, branch, author_name, author_email,
                          author_login, committer_name, committer_email, committer_login,
                          message, added, modified, removed, commit_timestamp, pushed_at,
                          delivery_guid, forced, recorded_at)
VALUES (:session_id, :sha, :ref, :branch, :author_name, :author_email, :author_login,
        :committer_name, :committer_email, :committer_login, :message, :added, :modified,
        :removed, :timestamp, :pushed_at, :guid, :forced, :now)
ON CONFLICT (lab_session_id, commit_sha) DO NOTHING;

-- name: attempt_id
-- The ledger row of one commit of a session.
SELECT id FROM lab_attempts WHERE lab_session_id = :session_id AND commit_sha = :sha;

-- name: attempts_page
-- A session's ledger in recording order, after the cursor (an attempt id).
SELECT * FROM lab_attempts
WHERE lab_session_id = :session_id AND (:after IS NULL OR id > :after)
ORDER BY id
LIMIT :limit;

-- name: insert_verification
-- A verification request or result; a used idempotency key adds nothing.
INSERT INTO verification_attempts (lab_session_id, outcome, commit_sha, lab_attempt_id, summary,
                                   details_url, idempotency_key, created_at)
VALUES (:session_id, :outcome, :sha,
        (SELECT id FROM lab_attempts WHERE lab_session_id = :session_id AND commit_sha = :sha),
        :summary, :details_url, :key, :now)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING *;

-- name: stored_response
-- The first answer given to an idempotency key.
SELECT request_hash, status_code, response FROM idempotency_keys WHERE scope = :scope AND key = :key;

-- name: store_response
-- Remember the answer to an idempotency key.
INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response, created_at)
VALUES (:scope, :key, :request_hash, :status_code, :response, :now);

-- name: stored_guids
-- Which of the given GUIDs have a stored delivery.
SELECT DISTINCT guid FROM deliveries WHERE guid IN (SELECT value FROM json_each(:guids));

-- name: redeliveries_asked
-- Which of the given GUIDs were already asked for on this hook.
SELECT guid FROM redelivery_requests
WHERE hook = :hook AND guid IN (SELECT value FROM json_each(:guids));

-- name: insert_redelivery
-- Remember a redelivery request (once per hook and GUID).
INSERT INTO redelivery_requests (hook, guid, github_delivery_id, event, action, outcome,
                                 requested_at)
VALUES (:hook, :guid, :delivery_id, :event, :action, :outcome, :now)
ON CONFLICT (hook, guid) DO NOTHING;

-- name: redelivery_counts
-- How many redeliveries were asked for, and when last.
SELECT sum(outcome = 'requested') AS requested, sum(outcome <> 'requested') AS failed,
       max(requested_at) AS last
FROM redelivery_requests;
