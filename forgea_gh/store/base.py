"""The `Store` protocol: every durable thing the daemon does, at domain level.

Each method is one transaction (its docstring says what is atomic), and
every backend error surfaces as `errors.StoreError`, never as a driver
exception. Backends: `store.sqlite.SqliteStore` (embedded, default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from forgea_gh import jobs, webhook

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

    async def release(self, job_ids: list[int], worker_id: str, now: datetime) -> int:
        """Give leased jobs back unfinished (shutdown): pending, the attempt not counted."""

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
