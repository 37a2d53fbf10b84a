"""A local stand-in for smee.io, and small helpers the smee tests share.

It behaves as probot/smee.io's lib/server.js does: GET /{channel} with
`Accept: text/event-stream` streams `event: ready` at once (and here a
`ping` right after), then one unnamed event per webhook POSTed to the
channel, whose `data:` is JSON.stringify({...lower-cased request headers,
body: parsed JSON body, query, timestamp}). JSON.stringify is emulated by
`webhook.encode_json` (checked against node in test_reserialized.py).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from forgea_gh import webhook

# Payloads with what re-serialization changes: non-ASCII text, control
# characters, "/" in strings, emoji beyond the BMP.
TRICKY_PAYLOADS: list[dict[str, Any]] = [
    {
        "action": "opened",
        "issue": {
            "number": 7,
            "title": "Café \u00fcber 日本語 🚀",
            "body": "colours: \u001b[31mred\u001b[0m\nbell \u0007 tab\t nul \u0000 del \u007f",
            "url": "https://api.github.com/repos/octo/lab/issues/7",
        },
        "repository": {"id": 4242, "full_name": "octo/lab"},
        "installation": {"id": 99},
        "sender": {"login": "zoë"},
    },
    {
        "zen": "Anything added dilutes everything else. ½ ≠ ⅓ \u2018q\u2019 \u000b\u001f",
        "hook_id": 123456,
        "hook": {"config": {"url": "https://smee.io/abc/def?x=1&y=/z"}, "active": True},
        "path": "src\\win\\path/and/unix",
        "empty": {},
        "none": None,
        "list": [1, -2, 3.25, "\u2028\u2029", []],
    },
]

# The ways GitHub's encoder may have written them (see webhook.RESERIALIZED_STYLES).
GITHUB_STYLES = [
    webhook.JsonStyle(upper_hex=True),
    webhook.JsonStyle(upper_hex=True, escape_solidus=True),
    webhook.JsonStyle(ascii_only=True, upper_hex=False),
    webhook.JsonStyle(ascii_only=True, upper_hex=True, escape_solidus=True),
    webhook.JsonStyle(upper_hex=True, pretty=True),
]


def github_body(payload: dict[str, Any], style: webhook.JsonStyle) -> bytes:
    body = webhook.encode_json(payload, style)
    # What a forwarder sends differs, or the test would prove nothing.
    assert body != webhook.encode_json(payload, webhook.JS_STRINGIFY)
    return body


def js_stringify(body: bytes) -> bytes:
    """What smee-client forwards for `body`: JSON.stringify(JSON.parse(body))."""
    return webhook.encode_json(json.loads(body), webhook.JS_STRINGIFY)


class SmeeChannel:
    def __init__(self) -> None:
        self.subscribers: list[asyncio.Queue[str | None]] = []
        self.connections = 0
        self.app = Starlette(
            routes=[
                Route("/{channel}", self._listen, methods=["GET"]),
                Route("/{channel}", self._receive, methods=["POST"]),
            ]
        )

    async def _listen(self, request: Request) -> Response:
        if request.headers.get("accept") != "text/event-stream":
            return HTMLResponse("<html>smee channel</html>")
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.subscribers.append(queue)
        self.connections += 1

        async def events() -> AsyncIterator[str]:
            sequence = 0
            try:
                yield f"id: {sequence}\nevent: ready\ndata: {{}}\n\n"
                sequence += 1
                yield f"id: {sequence}\nevent: ping\ndata: {{}}\n\n"
                while (data := await queue.get()) is not None:
                    sequence += 1
                    yield f"id: {sequence}\ndata: {data}\n\n"
            finally:
                self.subscribers.remove(queue)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-no-compression": "1"},
        )

    async def _receive(self, request: Request) -> Response:
        message = {
            **dict(request.headers),
            "body": json.loads(await request.body()),
            "query": dict(request.query_params),
            "timestamp": int(time.time() * 1000),
        }
        data = webhook.encode_json(message, webhook.JS_STRINGIFY).decode()
        for queue in self.subscribers:
            queue.put_nowait(data)
        return Response(status_code=200)

    def drop_streams(self) -> None:
        """End every open stream, as a restarting smee.io would."""
        for queue in self.subscribers:
            queue.put_nowait(None)

    async def wait_for_subscribers(self, count: int, timeout: float = 10.0) -> None:
        await wait_until(lambda: len(self.subscribers) >= count, timeout, "smee subscribers")


async def publish(channel_url: str, body: bytes, headers: dict[str, str]) -> None:
    """What GitHub does: POST the signed delivery to the channel."""
    async with httpx.AsyncClient() as client:
        response = await client.post(channel_url, content=body, headers=headers)
        assert response.status_code == 200, response.text


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        await asyncio.sleep(0.05)


def stored_deliveries(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT guid, hook_id, event, headers, content_type, body, signature_mode "
            "FROM deliveries ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [dict(row) | {"headers": json.loads(row["headers"])} for row in rows]


def delivery_count(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
