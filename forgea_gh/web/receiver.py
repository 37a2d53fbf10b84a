"""`POST /webhooks/github`: read the body, verify, store durably, answer.

A 202 goes out only after the delivery's row is committed; a store that
cannot commit answers 503, so GitHub (or an operator) redelivers. Status
codes are DESIGN §6's table; each error body says what was wrong.

This is the daemon's hot path, so it is a plain ASGI app rather than a
Starlette request handler: the headers become one dict once, the body is
read straight from `receive`, and the answer is two `send` calls. Every
microsecond here is taken from the ingest rate (scripts/bench_ingest).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import orjson
from starlette.types import Receive, Scope, Send

from forgea_gh import errors, jobs, timeutil, webhook
from forgea_gh.store import base

log = logging.getLogger(__name__)

_JSON_HEADERS = [(b"content-type", b"application/json")]


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
        # Answers by status code since start, for /metrics.
        self.answers: Counter[int] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, answer = await self.handle(scope, receive)
        self.answers[status] += 1
        body = orjson.dumps(answer)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", b"5"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, object]]:
        """The status and JSON body answering one webhook request."""
        # ASGI header names are lower-case bytes; one pass builds the lookup.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await self._read_body(headers, receive)
            delivery = webhook.Delivery.from_http(
                headers, body, self.secrets, accept_reserialized=self.accept_reserialized
            )
        except BodyTooLarge:
            message = f"body exceeds the {self.max_body_bytes}-byte limit (webhook.max_body_bytes)"
            return 413, {"error": message}
        except webhook.UnsupportedMediaTypeError as exc:
            return 415, {"error": str(exc)}
        except errors.SignatureError as exc:
            log.warning("rejected delivery %s: %s", headers.get("x-github-delivery", "?"), exc)
            return 401, {"error": str(exc)}
        except errors.BadDeliveryError as exc:
            return 400, {"error": str(exc)}

        try:
            result = await self.store.enqueue_delivery(delivery, self.clock())
        except errors.StoreError as exc:
            log.error("could not store delivery %s: %s", delivery.guid, exc)
            return 503, {"error": "the delivery could not be stored; retry later"}

        answer: dict[str, object] = {
            "status": result.outcome.value,
            "guid": delivery.guid,
            "hook_id": delivery.hook_id,
            "job_id": result.job_id,
        }
        if result.outcome is jobs.Enqueued.DUPLICATE:
            return 200, answer
        if result.outcome is jobs.Enqueued.REVIVED:
            log.info(
                "delivery %s received again: dead-lettered job %d revived",
                delivery.guid,
                result.job_id,
            )
        self.on_stored()
        return 202, answer

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLarge
        # Read message by message so a body without (or lying about)
        # Content-Length is cut off at the limit rather than held whole.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise errors.BadDeliveryError("the client went away before the body arrived")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
