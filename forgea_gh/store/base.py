"""The `Store` protocol: every durable thing the daemon does, at domain level.

Each method is one transaction (its docstring says what is atomic), and
every backend error surfaces as `errors.StoreError`, never as a driver
exception. Backends: `store.sqlite.SqliteStore` (embedded, default).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from forgea_gh import jobs, webhook
from forgea_gh.labs import lifecycle, model

T = TypeVar("T")

# Decides a rescued job's fate from (attempts, max_attempts): when to retry,
# or None to dead-letter it.
RescueDecision = Callable[[int, int], datetime | None]


@dataclass(frozen=True, slots=True)
class ReplaySelector:
    """Which jobs `replay` puts back in the queue. Exactly one of the first three."""

    guid: str | None = None
    job_id: int | None = None
    all_dead: bool = False
    event: str | None = None  # with all_dead: only deliveries of this event


@dataclass(frozen=True, slots=True)
class Replayed:
    job_id: int
    previous_status: str


@dataclass(frozen=True, slots=True)
class StatusSummary:
    backend: str
    # status -> kind -> count; every status is present, zero or not.
    counts: dict[str, dict[str, int]]
    oldest_pending_age_seconds: float | None
    last_processed_at: str | None
    # Redeliveries the reconciler asked GitHub for: requested, failed, last_requested_at.
    redelivery: dict[str, Any] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        return {status: sum(kinds.values()) for status, kinds in self.counts.items()}


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    kind: str | None = None
    event: str | None = None
    action: str | None = None
    guid: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PruneResult:
    jobs: int
    deliveries: int


@dataclass(frozen=True, slots=True)
class Rescued:
    job_id: int
    attempts: int
    dead_lettered: bool


@dataclass(slots=True)
class CheckReport:
    backend: str
    schema_version: int
    expected_version: int
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
    backend: str

    async def open(self) -> None:
        """Connect and bring the schema to the current version (or refuse)."""

    async def close(self) -> None:
        """Finish pending writes, then disconnect."""

    async def ping(self) -> None:
        """Raise StoreError unless the store answers a query."""

    async def commit_marker(self) -> int:
        """A number that changes when another process (or store) commits.

        This store's own writes leave it as it is. Cheap enough to poll
        several times a second: it is how a worker running apart from the
        receiver learns of new deliveries.
        """

    async def enqueue_delivery(
        self, delivery: webhook.Delivery, now: datetime
    ) -> jobs.EnqueueResult:
        """Durably store a delivery and its webhook job; return only after commit.

        Atomic per delivery: its row and its job commit together or not at all
        (concurrent calls may share one commit). A (guid, hook_id) seen before
        stores nothing; if its job is dead-lettered, the job is revived
        (pending, attempts reset, audited).
        """

    async def claim_due(
        self, worker_id: str, limit: int, now: datetime, lease_seconds: float
    ) -> list[jobs.ClaimedJob]:
        """Atomically lease up to `limit` due jobs to `worker_id`, counting an attempt each."""

    async def complete(self, job_id: int, worker_id: str, now: datetime, outcome: str) -> bool:
        """Mark a leased job completed. False if the lease was lost (nothing written)."""

    async def fail(self, job_id: int, worker_id: str, now: datetime, failure: jobs.Failure) -> bool:
        """Record a failed attempt and reschedule or dead-letter, in one transaction.

        False if the lease was lost (nothing written).
        """

    async def extend_leases(
        self, job_ids: list[int], worker_id: str, now: datetime, lease_seconds: float
    ) -> int:
        """Renew the leases `worker_id` still holds on these jobs (they are still running)."""

    async def release_worker(self, worker_id: str, now: datetime) -> int:
        """Give back every job `worker_id` still holds (shutdown, once its work has stopped):
        pending again, the interrupted attempt not counted."""

    async def rescue_expired(self, now: datetime, decide: RescueDecision) -> list[Rescued]:
        """Atomically end every expired lease as a failed attempt (retry or dead letter)."""

    async def replay(self, selector: ReplaySelector, now: datetime, actor: str) -> list[Replayed]:
        """Atomically put the selected failed or dead-lettered jobs back to pending (audited)."""

    async def status_summary(self, now: datetime) -> StatusSummary:
        """Job counts by status and kind, oldest pending age, last completion."""

    async def dead_letters(
        self, filters: DeadLetterFilter, cursor: str | None, limit: int
    ) -> DeadLetterPage:
        """A page of dead-lettered jobs, newest first."""

    async def dead_letter(self, job_id: int, include_payload: bool) -> dict[str, Any]:
        """One dead-lettered job with its error history; NotFoundError otherwise."""

    async def prune_completed(self, older_than: datetime) -> PruneResult:
        """Delete completed jobs finished before `older_than`, and deliveries left without a job."""

    async def check(self) -> CheckReport:
        """Schema version and integrity, for `forgea-gh db check`."""

    async def transaction(self, work: Callable[[LabTx], Awaitable[T]]) -> T:
        """Run `work` in one write transaction: all of it commits, or none of it."""

    async def read(self, work: Callable[[LabTx], Awaitable[T]]) -> T:
        """Run read-only `work` against a consistent snapshot (no write lock taken)."""

    async def complete_in(
        self,
        job_id: int,
        worker_id: str,
        now: datetime,
        work: Callable[[LabTx], Awaitable[str]],
    ) -> bool:
        """Run `work` and mark the job completed with its outcome, in ONE transaction.

        False (and nothing written, `work` not run) if the lease was lost. If
        `work` raises, everything rolls back and the exception propagates.
        """


@dataclass(frozen=True, slots=True)
class SessionFilter:
    status: str | None = None
    lab: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The first answer given to an admin API idempotency key."""

    request_hash: str
    status_code: int
    body: dict[str, Any]


class LabTx(Protocol):
    """Domain operations inside one open transaction (see `Store.transaction`).

    Nothing commits until the unit of work returns; an exception rolls every
    operation back. Rule violations (triggers, constraints) raise
    `errors.RuleViolation`.
    """

    now: str  # the transaction's timestamp, fixed-width UTC text

    async def audit(
        self,
        action: str,
        *,
        actor: str,
        subject: tuple[str, int | str] | None = None,
        guid: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None: ...

    async def enqueue_job(
        self, kind: str, idempotency_key: str, payload: dict[str, Any], max_attempts: int
    ) -> int | None:
        """A new outbound job; None if the key exists (the job was queued before)."""

    async def user(self, login: str, github_id: int | None) -> tuple[int, str, int | None]:
        """The user with this login (created if new): (id, login, github_id)."""

    async def lab(self, slug: str) -> model.Lab | None: ...

    async def create_lab(self, slug: str, title: str, template_repository: str) -> model.Lab: ...

    async def lab_version(self, lab_id: int, version: str | None) -> model.LabVersion | None:
        """One version of a lab, or its latest when `version` is None."""

    async def create_lab_version(
        self, lab_id: int, version: str, template_ref: str
    ) -> model.LabVersion: ...

    async def create_session(
        self,
        user_id: int,
        lab_version: model.LabVersion,
        status: lifecycle.Status,
        user_fork_url: str | None,
    ) -> model.Session: ...

    async def session(self, session_id: int) -> model.Session | None: ...

    async def session_by_repository(self, provider_repo_id: int) -> model.Session | None: ...

    async def unbound_session_by_fork_url(self, normalised_url: str) -> model.Session | None:
        """The newest session whose user_fork_url is this URL and has no repository yet."""

    async def sessions(
        self, filters: SessionFilter, cursor: int | None, limit: int
    ) -> list[model.Session]: ...

    async def idle_sessions(self, statuses: list[str], idle_since: str) -> list[model.Session]: ...

    async def bind_repository(self, session_id: int, repository: model.Repository) -> None: ...

    async def rename_repository(self, repository: model.Repository) -> bool:
        """Update a mapping's names and installation (id unchanged); False if unmapped."""

    async def set_status(self, session: model.Session, status: lifecycle.Status) -> model.Session:
        """Move the session if its row version is still `session.version`; else ConflictError."""

    async def touch(self, session: model.Session) -> model.Session:
        """Bump last_activity_at (and the row version) without a status change."""

    async def record_commits(self, session_id: int, push: model.Push, delivery_guid: str) -> int:
        """Ledger rows for the push's commits; returns how many were new."""

    async def attempt_id(self, session_id: int, commit_sha: str) -> int | None: ...

    async def attempts(
        self, session_id: int, cursor: int | None, limit: int
    ) -> list[dict[str, Any]]: ...

    async def add_verification(
        self,
        session_id: int,
        outcome: str,
        commit_sha: str | None,
        summary: str | None,
        details_url: str | None,
        idempotency_key: str,
    ) -> model.Verification | None:
        """A new verification row; None if the idempotency key was used before."""

    async def stored_response(self, scope: str, key: str) -> StoredResponse | None: ...

    async def stored_guids(self, guids: list[str]) -> set[str]:
        """Which of these delivery GUIDs are stored (for any hook)."""

    async def redeliveries_asked(self, hook: str, guids: list[str]) -> set[str]:
        """Which of these GUIDs the reconciler already asked GitHub to redeliver for `hook`."""

    async def record_redelivery(
        self,
        hook: str,
        guid: str,
        github_delivery_id: int,
        event: str | None,
        action: str | None,
        outcome: str,
    ) -> None: ...

    async def redelivery_counts(self) -> dict[str, Any]:
        """{"requested": n, "failed": n, "last_requested_at": text | None}."""

    async def store_response(
        self, scope: str, key: str, request_hash: str, status_code: int, body: dict[str, Any]
    ) -> None: ...
