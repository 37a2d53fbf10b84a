-- Named queries of the SQLite store (forgea_gh/store/sqlite.py).
-- Parameters are named (:name); times are fixed-width UTC text.

-- name: find_deliveries
-- Deliveries already stored for a batch of (guid, hook_id) keys, with their webhook job.
SELECT d.id, d.guid, d.hook_id, d.body_sha256, j.id AS job_id, j.status
FROM json_each(:keys) AS k
JOIN deliveries AS d ON d.guid = k.value ->> 0 AND d.hook_id = k.value ->> 1
JOIN jobs AS j ON j.delivery_id = d.id AND j.kind = 'webhook';

-- name: insert_delivery
-- One delivery row; the caller has checked it is new inside the same transaction.
INSERT INTO deliveries (guid, hook_id, event, action, installation_id, repository_id,
                        headers, content_type, body, body_sha256, signature_mode, received_at)
VALUES (:guid, :hook_id, :event, :action, :installation_id, :repository_id,
        :headers, :content_type, :body, :body_sha256, :signature_mode, :received_at);

-- name: webhook_job_range
-- The ids of the webhook jobs the deliveries_enqueue trigger made for deliveries ?1..?2.
SELECT min(id), max(id) FROM jobs WHERE delivery_id BETWEEN ?1 AND ?2 AND kind = 'webhook';

-- name: revive_job
-- A redelivered dead letter: back to pending with a fresh attempt budget.
UPDATE jobs
SET status = 'pending', attempts = 0, next_attempt_at = :now, updated_at = :now
WHERE id = :job_id AND status = 'dead_letter';

-- name: insert_audit
-- One audit row. The table rejects UPDATE and DELETE.
INSERT INTO audit_log (occurred_at, actor, action, subject_type, subject_id, delivery_guid, detail)
VALUES (:occurred_at, :actor, :action, :subject_type, :subject_id, :delivery_guid, :detail);

-- name: claim_due
-- Lease due jobs in order of due time; each claim counts as an attempt, so a
-- job whose processing kills the daemon still runs out of attempts.
UPDATE jobs
SET status = 'processing', attempts = attempts + 1, locked_by = :worker,
    locked_until = :until, updated_at = :now
WHERE id IN (SELECT id FROM jobs
             WHERE status IN ('pending', 'failed') AND next_attempt_at <= :now
             ORDER BY next_attempt_at, id
             LIMIT :limit)
RETURNING *;

-- name: deliveries_by_ids
-- The deliveries behind claimed webhook jobs.
SELECT * FROM deliveries WHERE id IN (SELECT value FROM json_each(:ids));

-- name: complete_job
-- Completion by the lease holder only: a lost lease writes nothing.
UPDATE jobs
SET status = 'completed', outcome = :outcome, locked_by = NULL, locked_until = NULL,
    completed_at = :now, updated_at = :now
WHERE id = :job_id AND status = 'processing' AND locked_by = :worker;

-- name: lease_held
-- Whether :worker still holds the job's lease.
SELECT 1 FROM jobs WHERE id = :job_id AND status = 'processing' AND locked_by = :worker;

-- name: insert_job_error
-- The history row of a failed attempt of a job leased by :worker.
INSERT INTO job_errors (job_id, attempt, error_class, message, occurred_at)
SELECT id, attempts, :error_class, :message, :now
FROM jobs
WHERE id = :job_id AND status = 'processing' AND locked_by = :worker;

-- name: fail_job
-- Reschedule at :retry_at, or dead-letter when :retry_at is NULL.
UPDATE jobs
SET status = CASE WHEN :retry_at IS NULL THEN 'dead_letter' ELSE 'failed' END,
    next_attempt_at = coalesce(:retry_at, next_attempt_at),
    last_error = :message, locked_by = NULL, locked_until = NULL, updated_at = :now
WHERE id = :job_id AND status = 'processing' AND locked_by = :worker
RETURNING id, kind, attempts, delivery_id, status;

-- name: extend_leases
-- Heartbeat: a worker still running these jobs renews its leases.
UPDATE jobs
SET locked_until = :until, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'processing' AND locked_by = :worker;

-- name: release_worker
-- Give back every job a stopping worker still holds; the attempt does not count.
UPDATE jobs
SET status = CASE WHEN last_error IS NULL THEN 'pending' ELSE 'failed' END,
    attempts = max(attempts - 1, 0), next_attempt_at = :now,
    locked_by = NULL, locked_until = NULL, updated_at = :now
WHERE status = 'processing' AND locked_by = :worker;

-- name: expired_leases
-- Jobs whose holder died or hung past its lease.
SELECT id, kind, attempts, max_attempts, locked_by, locked_until, delivery_id
FROM jobs
WHERE status = 'processing' AND locked_until < :now
ORDER BY id;

-- name: insert_rescue_error
-- The history row of an attempt that ended by lease expiry.
INSERT INTO job_errors (job_id, attempt, error_class, message, occurred_at)
VALUES (:job_id, :attempt, 'LeaseExpired', :message, :now);

-- name: end_expired_lease
-- Reschedule or dead-letter a job whose lease expired (still expired: checked again).
UPDATE jobs
SET status = CASE WHEN :retry_at IS NULL THEN 'dead_letter' ELSE 'failed' END,
    next_attempt_at = coalesce(:retry_at, next_attempt_at),
    last_error = :message, locked_by = NULL, locked_until = NULL, updated_at = :now
WHERE id = :job_id AND status = 'processing' AND locked_until < :now;

-- name: guid_of_delivery
-- The GUID of a job's delivery, for audit rows.
SELECT guid FROM deliveries WHERE id = :delivery_id;

-- name: replayable_by_guid
-- Failed or dead-lettered jobs of every delivery with this GUID (any hook).
SELECT j.id, j.status, d.guid
FROM jobs AS j JOIN deliveries AS d ON d.id = j.delivery_id
WHERE d.guid = :guid AND j.status IN ('failed', 'dead_letter')
ORDER BY j.id;

-- name: job_by_id
-- One job with its delivery's GUID, if any.
SELECT j.id, j.status, d.guid
FROM jobs AS j LEFT JOIN deliveries AS d ON d.id = j.delivery_id
WHERE j.id = :job_id;

-- name: dead_by_event
-- Every dead letter, optionally only deliveries of one event.
SELECT j.id, j.status, d.guid
FROM jobs AS j LEFT JOIN deliveries AS d ON d.id = j.delivery_id
WHERE j.status = 'dead_letter' AND (:event IS NULL OR d.event = :event)
ORDER BY j.id;

-- name: replay_job
-- Back to pending with a fresh attempt budget, due now.
UPDATE jobs
SET status = 'pending', attempts = 0, next_attempt_at = :now, updated_at = :now
WHERE id = :job_id AND status IN ('failed', 'dead_letter');

-- name: count_jobs
-- Job counts by status and kind.
SELECT status, kind, count(*) AS n FROM jobs GROUP BY status, kind;

-- name: oldest_waiting
-- Creation time of the oldest job not yet done (pending, or failed awaiting retry).
SELECT min(created_at) AS oldest FROM jobs WHERE status IN ('pending', 'failed');

-- name: last_completed
-- When the most recent job completed.
SELECT max(completed_at) AS last FROM jobs WHERE status = 'completed';

-- name: list_dead_letters
-- A page of dead letters, newest first, after the cursor (a job id).
SELECT j.id, j.kind, j.attempts, j.max_attempts, j.last_error, j.created_at,
       j.updated_at AS dead_lettered_at, j.idempotency_key,
       d.guid, d.hook_id, d.event, d.action, d.installation_id, d.repository_id, d.received_at
FROM jobs AS j LEFT JOIN deliveries AS d ON d.id = j.delivery_id
WHERE j.status = 'dead_letter'
  AND (:kind IS NULL OR j.kind = :kind)
  AND (:event IS NULL OR d.event = :event)
  AND (:action IS NULL OR d.action = :action)
  AND (:guid IS NULL OR d.guid = :guid)
  AND (:before IS NULL OR j.id < :before)
ORDER BY j.id DESC
LIMIT :limit;

-- name: get_dead_letter
-- One job (any status: the caller says what is not dead) with its delivery.
SELECT j.id, j.kind, j.status, j.attempts, j.max_attempts, j.last_error, j.created_at,
       j.updated_at AS dead_lettered_at, j.idempotency_key, j.payload AS job_payload,
       d.guid, d.hook_id, d.event, d.action, d.installation_id, d.repository_id, d.received_at,
       d.headers, d.content_type, d.body, d.signature_mode
FROM jobs AS j LEFT JOIN deliveries AS d ON d.id = j.delivery_id
WHERE j.id = :job_id;

-- name: job_errors
-- A job's failed attempts, in order.
SELECT attempt, error_class, message, occurred_at FROM job_errors WHERE job_id = :job_id ORDER BY id;

-- name: prune_jobs
-- A chunk of completed jobs finished before :before (their errors go with them).
DELETE FROM jobs
WHERE id IN (SELECT id FROM jobs WHERE status = 'completed' AND completed_at < :before LIMIT :chunk);

-- name: prune_deliveries
-- Deliveries left without any job by prune_jobs.
DELETE FROM deliveries
WHERE id IN (SELECT d.id FROM deliveries AS d
             WHERE d.received_at < :before
               AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.delivery_id = d.id)
             LIMIT :chunk);
