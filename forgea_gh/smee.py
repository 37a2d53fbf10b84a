"""Forward a smee.io channel into a forgea_gh receiver, as smee-client does.

smee.io (https://github.com/probot/smee.io, lib/server.js) answers a GET of
the channel with Accept: text/event-stream by a Server-Sent Events stream:
an `event: ready` at once, an `event: ping` every 30 s, and for each webhook
POSTed to the channel an unnamed (`message`) event whose `data:` is
JSON.stringify of the request's lower-cased headers plus `body` (the parsed
JSON body), `query` and `timestamp`. The forwarder POSTs each message to the
target with the original headers (X-GitHub-Event, X-GitHub-Delivery,
X-Hub-Signature-256, ...), without `host`, `content-length` and smee's own
fields, and with the body as the channel carried it: exactly the bytes
smee-client (https://github.com/probot/smee-client, index.ts) would send.
Those are not the bytes GitHub signed, so the receiver needs
`webhook.accept_reserialized`.

The SSE parsing (`SseDecoder`) and the event-to-request mapping
(`forward_from`) are pure; `Forwarder` is the I/O loop around them.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from forgea_gh import retry, webhook

log = logging.getLogger(__name__)

MESSAGE = "message"

_LINE_END = re.compile(r"\r\n|\r|\n")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")

# smee's own fields of a message; `body` becomes the request body.
SMEE_FIELDS = frozenset({"body", "query", "timestamp"})
# Headers that describe the hop to smee.io, not the delivery, or that the
# forwarded request sets for itself (the body is JSON whatever arrived).
DROPPED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "accept-encoding",
    }
)

# Reconnecting to the channel: random(0, min(30, 1 * 2^(n-1))) seconds.
RECONNECT_POLICY = retry.RetryPolicy(base_seconds=1.0, max_seconds=30.0, max_attempts=0)
# Forwarding one delivery: the receiver may not listen yet (serve starts the
# forwarder before uvicorn binds) or answer 503; it deduplicates by GUID, so a
# retry cannot store a delivery twice.
FORWARD_POLICY = retry.RetryPolicy(base_seconds=0.5, max_seconds=4.0, max_attempts=5)


# -- Server-Sent Events ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str = MESSAGE
    data: str = ""
    # The last event ID when this event was dispatched ("" = none yet).
    id: str = ""
    retry_ms: int | None = None


@dataclass(slots=True)
class SseDecoder:
    """The event-stream interpretation of the HTML standard, one line at a time.

    https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
    Lines come without their terminator (CRLF, LF or CR); a blank line
    dispatches the event gathered so far. Pure: no I/O, no clock.
    """

    last_event_id: str = ""
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _retry_ms: int | None = None
    _first_line: bool = True

    def feed(self, line: str) -> ServerSentEvent | None:
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isdigit() and value.isascii():
                self._retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data, retry_ms = self._event, self._data, self._retry_ms
        self._event, self._data, self._retry_ms = "", [], None
        if not data:
            return None
        return ServerSentEvent(event or MESSAGE, "\n".join(data), self.last_event_id, retry_ms)


@dataclass(slots=True)
class LineSplitter:
    """An event stream's text, chunk by chunk, into lines ended by CRLF, LF or CR.

    Only those: str.splitlines() also splits on U+2028, U+0085 and others
    that JSON.stringify leaves raw inside a `data:` line.
    """

    _pending: str = ""
    _after_cr: bool = False

    def feed(self, text: str) -> list[str]:
        if not text:
            return []
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across chunks
        self._after_cr = text.endswith("\r")
        lines = _LINE_END.split(self._pending + text)
        self._pending = lines.pop()
        return lines


def parse_stream(chunks: Iterable[str]) -> list[ServerSentEvent]:
    """Every event completed in a stream's text chunks."""
    splitter = LineSplitter()
    return parse_lines(line for chunk in chunks for line in splitter.feed(chunk))


def parse_lines(lines: Iterable[str]) -> list[ServerSentEvent]:
    """Every event completed in `lines`; an unfinished last one is dropped, as the standard says."""
    decoder = SseDecoder()
    return [event for line in lines if (event := decoder.feed(line)) is not None]


# -- smee message -> request -------------------------------------------------


class BadMessageError(ValueError):
    """A smee message that cannot become a request."""


@dataclass(frozen=True, slots=True)
class Forward:
    """The request one smee message becomes."""

    headers: dict[str, str]
    body: bytes
    query: dict[str, str | list[str]]

    @property
    def guid(self) -> str:
        return self.headers.get("x-github-delivery", "?")

    @property
    def event(self) -> str:
        return self.headers.get("x-github-event", "?")


def forward_from(data: str) -> Forward:
    """The request for a smee message's `data`; raise BadMessageError if it has none.

    The body is the `body` member's text exactly as the channel carried it
    (smee.io writes it with JSON.stringify): nothing is parsed and written
    again here, so the bytes are the ones smee-client sends.
    """
    members = _top_level_members(data)
    if "body" not in members:
        raise BadMessageError("message has no body")
    headers: dict[str, str] = {}
    for name, (value, _) in members.items():
        name = name.lower()
        if name in SMEE_FIELDS or name in DROPPED_HEADERS or not _HEADER_NAME.fullmatch(name):
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ", ".join(value)
        if not isinstance(value, str):
            continue  # not a header Node could have parsed
        # Node decodes header bytes as latin-1: anything else did not come
        # from a request, and a line break would split the header.
        if not _HEADER_VALUE.fullmatch(value):
            continue
        headers[name] = value
    headers["content-type"] = webhook.JSON
    query: dict[str, str | list[str]] = {}
    raw_query = members.get("query", (None, ""))[0]
    if isinstance(raw_query, dict):
        for key, value in raw_query.items():
            if isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                query[key] = value
    return Forward(headers, members["body"][1].encode("utf-8"), query)


def _top_level_members(data: str) -> dict[str, tuple[Any, str]]:
    """Each member of the JSON object `data`: (parsed value, its exact source text)."""
    decoder = json.JSONDecoder()
    text = data.strip()
    members: dict[str, tuple[Any, str]] = {}
    try:
        if not text.startswith("{"):
            raise BadMessageError("message data is not a JSON object")
        index = _skip_space(text, 1)
        if text[index] == "}":
            index += 1
        else:
            while True:
                if text[index] != '"':
                    raise BadMessageError("message data is not a JSON object")
                key, index = decoder.raw_decode(text, index)
                index = _skip_space(text, index)
                if text[index] != ":":
                    raise BadMessageError("message data is not a JSON object")
                start = _skip_space(text, index + 1)
                value, index = decoder.raw_decode(text, start)
                members[key] = (value, text[start:index])
                index = _skip_space(text, index)
                if text[index] == "}":
                    index += 1
                    break
                if text[index] != ",":
                    raise BadMessageError("message data is not a JSON object")
                index = _skip_space(text, index + 1)
    except BadMessageError:
        raise
    except (ValueError, IndexError) as exc:  # JSONDecodeError is a ValueError
        raise BadMessageError(f"message data is not JSON: {exc}") from None
    if text[index:].strip():
        raise BadMessageError("message data has text after the JSON object")
    return members


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\n\r":
        index += 1
    return index


# -- the loop ----------------------------------------------------------------


class ChannelError(Exception):
    """The channel answered something other than an event stream."""


class Forwarder:
    """Listen on a smee channel and POST each delivery to `target`, until cancelled.

    One httpx client carries the stream and the forwards. A dropped or
    refused stream is reconnected after a capped exponential backoff with
    full jitter (`reconnect_policy`); the count restarts once a connection
    delivered an event. Deliveries are forwarded one at a time, in order.
    """

    def __init__(
        self,
        source: str,
        target: str,
        *,
        reconnect_policy: retry.RetryPolicy = RECONNECT_POLICY,
        forward_policy: retry.RetryPolicy = FORWARD_POLICY,
        read_timeout: float = 90.0,
        forward_timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.source = source
        self.target = target
        self.reconnect_policy = reconnect_policy
        self.forward_policy = forward_policy
        # smee.io pings every 30 s: a silent stream for longer is a dead one.
        self.read_timeout = read_timeout
        self.forward_timeout = forward_timeout
        self.transport = transport
        self.rand = rand
        self.connections = 0
        self.forwarded = 0
        self.last_event_id = ""

    async def run(self) -> None:
        log.info("smee: forwarding %s to %s", self.source, self.target)
        failures = 0
        async with httpx.AsyncClient(transport=self.transport) as client:
            while True:
                try:
                    received = await self._listen(client)
                    problem = "the channel closed the stream"
                except (httpx.HTTPError, ChannelError) as exc:
                    received = False
                    problem = str(exc) or type(exc).__name__
                except Exception:  # a bug must not end forwarding for good
                    log.exception("smee: unexpected error on %s", self.source)
                    received = False
                    problem = "unexpected error"
                failures = 1 if received else failures + 1
                delay = self.reconnect_policy.next_delay(failures, self.rand)
                log.warning("smee: %s: %s; reconnecting in %.1fs", self.source, problem, delay)
                await asyncio.sleep(delay)

    async def _listen(self, client: httpx.AsyncClient) -> bool:
        """Read one connection's events; whether any arrived."""
        # smee.io streams only when Accept is exactly text/event-stream.
        headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
        if self.last_event_id:
            headers["last-event-id"] = self.last_event_id
        timeout = httpx.Timeout(self.forward_timeout, read=self.read_timeout)
        received = False
        async with client.stream(
            "GET", self.source, headers=headers, timeout=timeout, follow_redirects=True
        ) as response:
            content_type = response.headers.get("content-type", "")
            if response.status_code != 200 or not content_type.startswith("text/event-stream"):
                raise ChannelError(
                    f"HTTP {response.status_code} ({content_type or 'no content type'}), "
                    "not an event stream"
                )
            self.connections += 1
            # The stream is UTF-8 whatever the headers say (the SSE standard).
            text = codecs.getincrementaldecoder("utf-8")(errors="replace")
            splitter = LineSplitter()
            decoder = SseDecoder(last_event_id=self.last_event_id)
            async for chunk in response.aiter_bytes():
                for line in splitter.feed(text.decode(chunk)):
                    event = decoder.feed(line)
                    if event is None:
                        continue
                    received = True
                    self.last_event_id = event.id
                    await self._handle(client, event)
        return received

    async def _handle(self, client: httpx.AsyncClient, event: ServerSentEvent) -> None:
        if event.event == "ready":
            log.info("smee: connected to %s", self.source)
        elif event.event == MESSAGE:
            try:
                request = forward_from(event.data)
            except BadMessageError as exc:
                log.warning("smee: skipped a message from %s: %s", self.source, exc)
                return
            await self._forward(client, request)
        # `ping` and other named events carry no delivery.

    async def _forward(self, client: httpx.AsyncClient, request: Forward) -> int | None:
        """POST one delivery; its HTTP status, or None when it could not be delivered."""
        url = httpx.URL(self.target)
        if request.query:
            url = url.copy_merge_params(request.query)
        headers = [(k.encode("ascii"), v.encode("latin-1")) for k, v in request.headers.items()]
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await client.post(
                    url, content=request.body, headers=headers, timeout=self.forward_timeout
                )
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
            else:
                if response.status_code < 500:
                    self._report(request, response)
                    return response.status_code
                problem = f"HTTP {response.status_code}"
            if self.forward_policy.exhausted(attempt):
                log.error(
                    "smee: could not forward %s delivery %s to %s after %d attempts: %s",
                    request.event,
                    request.guid,
                    self.target,
                    attempt,
                    problem,
                )
                return None
            await asyncio.sleep(self.forward_policy.next_delay(attempt, self.rand))

    def _report(self, request: Forward, response: httpx.Response) -> None:
        self.forwarded += 1
        if response.is_success:
            log.info(
                "smee: forwarded %s delivery %s to %s: %d",
                request.event,
                request.guid,
                self.target,
                response.status_code,
            )
            return
        hint = ""
        if response.status_code == 401:
            hint = " (re-serialized bodies verify only with webhook.accept_reserialized = true)"
        log.warning(
            "smee: forwarded %s delivery %s to %s: %d %s%s",
            request.event,
            request.guid,
            self.target,
            response.status_code,
            response.text.strip()[:200],
            hint,
        )
