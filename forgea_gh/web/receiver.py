"""`POST /webhooks/github`: read the body, verify, store durably, answer.

A 202 goes out only after the delivery's row is committed; a store that
cannot commit answers 503, so GitHub (or an operator) redelivers. Status
codes are DESIGN §6's table; each error body says what was wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response

from forgea_gh import errors, jobs, timeutil, webhook
from forgea_gh.store import base
from forgea_gh.web import responses

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


class Receiver:
    def __init__(
        self,
        store: base.Store,
        secrets: Sequence[bytes],
        *,
        max_body_bytes: int,
        accept_reserialized: bool = False,
        on_stored: Callable[[], None] = lambda: None,
        clock: timeutil.Clock = timeutil.utcnow,
    ) -> None:
        self.store = store
        self.secrets = list(secrets)
        self.max_body_bytes = max_body_bytes
        self.accept_reserialized = accept_reserialized
        self.on_stored = on_stored
        self.clock = clock

    async def handle(self, request: Request) -> Response:
        try:
            body = await self._read_body(request)
            delivery = webhook.Delivery.from_http(
                request.headers, body, self.secrets, accept_reserialized=self.accept_reserialized
            )
        except BodyTooLarge:
            return responses.error(
                413, f"body exceeds the {self.max_body_bytes}-byte limit (webhook.max_body_bytes)"
            )
        except webhook.UnsupportedMediaTypeError as exc:
            return responses.error(415, str(exc))
        except errors.SignatureError as exc:
            log.warning(
                "rejected delivery %s: %s", request.headers.get("x-github-delivery", "?"), exc
            )
            return responses.error(401, str(exc))
        except errors.BadDeliveryError as exc:
            return responses.error(400, str(exc))

        try:
            result = await self.store.enqueue_delivery(delivery, self.clock())
        except errors.StoreError as exc:
            log.error("could not store delivery %s: %s", delivery.guid, exc)
            return responses.error(
                503, "the delivery could not be stored; retry later", {"Retry-After": "5"}
            )

        body_out = {
            "status": result.outcome.value,
            "guid": delivery.guid,
            "hook_id": delivery.hook_id,
            "job_id": result.job_id,
        }
        if result.outcome is jobs.Enqueued.DUPLICATE:
            return responses.json(200, body_out)
        if result.outcome is jobs.Enqueued.REVIVED:
            log.info(
                "delivery %s received again: dead-lettered job %d revived",
                delivery.guid,
                result.job_id,
            )
        self.on_stored()
        return responses.json(202, body_out)

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLarge
        # Read in chunks so a body without (or lying about) Content-Length is
        # cut off at the limit rather than held whole in memory.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)
