"""Maps a claimed job to the handler that does its work.

Webhook jobs are routed by (event, action), falling back to (event, any
action); other jobs by kind. An event nobody handles is completed as
ignored: GitHub sends many events a lab never needs, and none of them is a
failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from forgea_gh import errors, jobs

# A handler does the job's work and returns a short outcome for the job row
# ("handled: ...", "ignored: ..."). It raises RetryableError or
# PermanentError (anything else counts as retryable).
Handler = Callable[[jobs.ClaimedJob], Awaitable[str]]


class Router:
    def __init__(self) -> None:
        self._events: dict[tuple[str, str | None], Handler] = {}
        self._kinds: dict[str, Handler] = {}

    def on_event(self, event: str, handler: Handler, action: str | None = None) -> None:
        self._events[(event, action)] = handler

    def on_kind(self, kind: str, handler: Handler) -> None:
        if kind == jobs.WEBHOOK:
            raise ValueError("webhook jobs are routed by event: use on_event")
        self._kinds[kind] = handler

    def resolve(self, claimed: jobs.ClaimedJob) -> Handler:
        job = claimed.job
        if job.kind != jobs.WEBHOOK:
            handler = self._kinds.get(job.kind)
            if handler is None:
                return _no_handler_for_kind
            return handler
        delivery = claimed.delivery
        if delivery is None:
            return _missing_delivery
        handler = self._events.get((delivery.event, delivery.action)) or self._events.get(
            (delivery.event, None)
        )
        return handler or _ignore


async def _ignore(claimed: jobs.ClaimedJob) -> str:
    assert claimed.delivery is not None
    return f"ignored: no handler for event {claimed.delivery.event!r}"


async def _no_handler_for_kind(claimed: jobs.ClaimedJob) -> str:
    raise errors.PermanentError(f"no handler for job kind {claimed.job.kind!r}")


async def _missing_delivery(claimed: jobs.ClaimedJob) -> str:
    raise errors.PermanentError(f"webhook job {claimed.job.id} has no delivery")
