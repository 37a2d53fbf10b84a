"""What the queue holds: jobs, the deliveries behind them, and their outcomes."""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from forgea_gh import webhook

WEBHOOK = "webhook"

# A database row: sqlite3.Row, asyncpg.Record or a plain dict.
Row = Mapping[str, Any] | sqlite3.Row


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"  # failed, and scheduled for another attempt
    DEAD_LETTER = "dead_letter"


class Enqueued(enum.StrEnum):
    """What storing a delivery did."""

    STORED = "stored"  # new delivery, new job
    DUPLICATE = "duplicate"  # seen before, its job is done or on its way: nothing new
    REVIVED = "revived"  # seen before and dead-lettered: the job is pending again


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    outcome: Enqueued
    job_id: int
    delivery_id: int


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    id: int
    guid: str
    hook_id: int
    event: str
    action: str | None
    installation_id: int | None
    repository_id: int | None
    headers: dict[str, str]
    content_type: str
    body: bytes
    signature_mode: str
    received_at: str

    @classmethod
    def from_row(cls, row: Row) -> StoredDelivery:
        return cls(
            id=row["id"],
            guid=row["guid"],
            hook_id=row["hook_id"],
            event=row["event"],
            action=row["action"],
            installation_id=row["installation_id"],
            repository_id=row["repository_id"],
            headers=orjson.loads(row["headers"]),
            content_type=row["content_type"],
            body=bytes(row["body"]),
            signature_mode=row["signature_mode"],
            received_at=row["received_at"],
        )

    def payload(self) -> dict[str, Any]:
        """The parsed JSON payload; raises BadDeliveryError if it cannot be decoded."""
        return webhook.decode_payload(self.content_type, self.body)


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    delivery_id: int | None
    payload: dict[str, Any] | None
    idempotency_key: str
    status: JobStatus
    attempts: int
    max_attempts: int
    next_attempt_at: str
    locked_by: str | None
    locked_until: str | None
    last_error: str | None
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: Row) -> Job:
        return cls(
            id=row["id"],
            kind=row["kind"],
            delivery_id=row["delivery_id"],
            payload=orjson.loads(row["payload"]) if row["payload"] is not None else None,
            idempotency_key=row["idempotency_key"],
            status=JobStatus(row["status"]),
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            next_attempt_at=row["next_attempt_at"],
            locked_by=row["locked_by"],
            locked_until=row["locked_until"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job leased to one worker, with its delivery when it has one."""

    job: Job
    delivery: StoredDelivery | None


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as job_errors records it."""

    error_class: str
    message: str
    # When to try again; None means dead-letter now.
    retry_at: str | None
