"""Maps a claimed job to the handler that does its work.

Webhook jobs are routed by (event, action), falling back to (event, any
action); other jobs by kind. An event nobody handles is completed as
ignored: GitHub sends many events a lab never needs, and none of them is a
failure.

Two shapes of handler: a `Handler` runs on its own (it may call GitHub) and
its outcome is recorded afterwards; a `TxHandler` runs inside the
transaction that completes the job, so its writes and the completion
commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from forgea_gh import errors, jobs
from forgea_gh.store import base

# Each returns a short outcome for the job row ("handled: ...", "ignored: ...")
# and raises RetryableError or PermanentError (anything else counts as retryable).
Handler = Callable[[jobs.ClaimedJob], Awaitable[str]]
TxHandler = Callable[[jobs.ClaimedJob, base.LabTx], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler | None = None
    tx_handler: TxHandler | None = None


class Router:
    def __init__(self) -> None:
        self._events: dict[tuple[str, str | None], Route] = {}
        self._kinds: dict[str, Route] = {}

    def on_event(self, event: str, handler: Handler, action: str | None = None) -> None:
        self._events[(event, action)] = Route(handler=handler)

    def on_event_in_tx(self, event: str, handler: TxHandler, action: str | None = None) -> None:
        self._events[(event, action)] = Route(tx_handler=handler)

    def on_kind(self, kind: str, handler: Handler) -> None:
        if kind == jobs.WEBHOOK:
            raise ValueError("webhook jobs are routed by event: use on_event")
        self._kinds[kind] = Route(handler=handler)

    def resolve(self, claimed: jobs.ClaimedJob) -> Route:
        job = claimed.job
        if job.kind != jobs.WEBHOOK:
            return self._kinds.get(job.kind) or Route(handler=_no_handler_for_kind)
        delivery = claimed.delivery
        if delivery is None:
            return Route(handler=_missing_delivery)
        route = self._events.get((delivery.event, delivery.action)) or self._events.get(
            (delivery.event, None)
        )
        return route or Route(handler=_ignore)


async def _ignore(claimed: jobs.ClaimedJob) -> str:
    assert claimed.delivery is not None
    return f"ignored: no handler for event {claimed.delivery.event!r}"


async def _no_handler_for_kind(claimed: jobs.ClaimedJob) -> str:
    raise errors.PermanentError(f"no handler for job kind {claimed.job.kind!r}")


async def _missing_delivery(claimed: jobs.ClaimedJob) -> str:
    raise errors.PermanentError(f"webhook job {claimed.job.id} has no delivery")
