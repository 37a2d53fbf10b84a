"""The lifecycle of a lab session (DESIGN §4).

    PROVISIONING ─▶ ACTIVE ─▶ VERIFYING ─▶ COMPLETED
         │             ▲          │  ▲ (new push: VERIFYING→VERIFYING)
         ▼             └──────────┘  (verification failed/error → ACTIVE)
    PROVISIONING_FAILED        ACTIVE|VERIFYING ─▶ ABANDONED | EXPIRED

`TRANSITIONS` is the same table as `lab_status_transitions` in schema.sql
(a test proves it); the application checks it first so it can explain a
refusal, and the database trigger refuses whatever slips past.
"""

from __future__ import annotations

import enum

from forgea_gh import errors


class Status(enum.StrEnum):
    PROVISIONING = "PROVISIONING"
    ACTIVE = "ACTIVE"
    VERIFYING = "VERIFYING"
    COMPLETED = "COMPLETED"
    PROVISIONING_FAILED = "PROVISIONING_FAILED"
    ABANDONED = "ABANDONED"
    EXPIRED = "EXPIRED"


TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.PROVISIONING, Status.ACTIVE),
        (Status.PROVISIONING, Status.PROVISIONING_FAILED),
        (Status.ACTIVE, Status.VERIFYING),
        (Status.ACTIVE, Status.ABANDONED),
        (Status.ACTIVE, Status.EXPIRED),
        (Status.VERIFYING, Status.COMPLETED),
        (Status.VERIFYING, Status.ACTIVE),
        (Status.VERIFYING, Status.ABANDONED),
        (Status.VERIFYING, Status.EXPIRED),
    }
)

INITIAL = frozenset({Status.PROVISIONING, Status.ACTIVE})
TERMINAL = frozenset(
    {Status.COMPLETED, Status.ABANDONED, Status.EXPIRED, Status.PROVISIONING_FAILED}
)
# Sessions a push moves to VERIFYING; pushes to others are recorded only.
ACCEPTS_WORK = frozenset({Status.ACTIVE, Status.VERIFYING})


class IllegalTransition(errors.ConflictError):
    """The lifecycle does not allow this move."""


def allowed(current: Status, target: Status) -> bool:
    return current == target or (current, target) in TRANSITIONS


def check(current: Status, target: Status) -> None:
    if not allowed(current, target):
        raise IllegalTransition(f"a {current} session cannot become {target}")


def is_terminal(status: Status) -> bool:
    return status in TERMINAL
