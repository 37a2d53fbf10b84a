"""The error types the rest of the daemon speaks.

Backend exceptions (sqlite3, aiosqlite, httpx) are translated into these at
the boundary, so the processor and the web layer never see a driver error.
"""

from __future__ import annotations


class ForgeaError(Exception):
    """Base of every error forgea_gh raises on purpose."""


class ConfigError(ForgeaError):
    """The configuration is missing something or holds an invalid value."""


class RetryableError(ForgeaError):
    """A job failed in a way that may succeed later (network, 5xx, lock).

    `retry_after` (seconds), when set, is the earliest sensible retry; the
    retry policy never schedules sooner than it.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ForgeaError):
    """A job can never succeed as it is (malformed payload, 4xx): dead-letter it now."""


class SignatureError(ForgeaError):
    """A webhook delivery's signature is missing or does not verify."""


class BadDeliveryError(ForgeaError):
    """A webhook request is malformed: missing headers, unparsable body."""


class StoreError(ForgeaError):
    """The store could not do what was asked (I/O error, lock timeout, closed)."""


class SchemaVersionError(StoreError):
    """The database's schema version is not one this daemon can run on."""


class NotFoundError(ForgeaError):
    """The thing asked for does not exist."""


class ConflictError(ForgeaError):
    """The request conflicts with the current state (e.g. replaying a completed job)."""


class BadRequestError(ForgeaError):
    """A request parameter is invalid (an unknown cursor, a bad filter)."""


class RuleViolation(StoreError):
    """The database refused a write that breaks a domain rule (a trigger or constraint).

    Raised for what the schema itself forbids: changing the append-only
    ledger, an illegal lifecycle move, a session whose version belongs to
    another lab. The message is the rule's own.
    """


class ValidationError(ForgeaError):
    """A request field is invalid; `field` names it (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnavailableError(ForgeaError):
    """A feature needs something this daemon does not have (e.g. GitHub credentials)."""
