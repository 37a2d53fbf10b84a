"""The smee forwarder: SSE parsing, message mapping, and forwarding into a real daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forgea_gh import app as app_mod
from forgea_gh import retry, settings, smee
from tests.smee_channel import (
    GITHUB_STYLES,
    TRICKY_PAYLOADS,
    SmeeChannel,
    delivery_count,
    github_body,
    js_stringify,
    publish,
    stored_deliveries,
    wait_until,
)
from tests.support import SECRET, free_port, live_server, make_config, signed_headers

FAST = retry.RetryPolicy(base_seconds=0.01, max_seconds=0.05, max_attempts=5)

# -- SSE parsing ---------------------------------------------------------------

E = smee.ServerSentEvent


@pytest.mark.parametrize(
    ("lines", "events"),
    [
        # smee.io's own frames
        (["id: 0", "event: ready", "data: {}", ""], [E("ready", "{}", "0")]),
        (["id: 1", "event: ping", "data: {}", ""], [E("ping", "{}", "1")]),
        (["id: 2", 'data: {"a":1}', ""], [E("message", '{"a":1}', "2")]),
        # several data lines join with a newline
        (["data: a", "data: b", "data:", ""], [E("message", "a\nb\n")]),
        # one leading space is dropped, no more; no space is fine too
        (["data:  two", ""], [E("message", " two")]),
        (["data:x", "event:custom", ""], [E("custom", "x")]),
        # a line without a colon is a field with an empty value
        (["data", ""], [E("message", "")]),
        (["data: first", "", "data: second", ""], [E(data="first"), E(data="second")]),
        # comments (keep-alives) and unknown fields are ignored
        ([": keep-alive", "foo: bar", "data: x", ""], [E("message", "x")]),
        # an event type alone dispatches nothing, and does not leak into the next event
        (["event: ready", "", "data: x", ""], [E("message", "x")]),
        # blank lines between events dispatch nothing
        (["", "", "data: x", "", ""], [E("message", "x")]),
        # the last event ID sticks to later events; an ID with NUL is ignored
        (["id: 7", "data: a", "", "data: b", ""], [E(data="a", id="7"), E(data="b", id="7")]),
        (["id: 7", "id: x\0y", "data: a", ""], [E(data="a", id="7")]),
        (["id", "data: a", ""], [E(data="a", id="")]),
        # retry: digits only
        (["retry: 2500", "data: a", ""], [E(data="a", retry_ms=2500)]),
        (["retry: 2.5", "data: a", ""], [E(data="a")]),
        # a byte-order mark at the start of the stream
        (["\ufeffdata: a", ""], [E(data="a")]),
        # an event never terminated by a blank line is not dispatched
        (["data: complete", "", "data: cut"], [E(data="complete")]),
        # field names are case-sensitive
        (["Data: a", "data: b", ""], [E(data="b")]),
    ],
)
def test_sse_lines_to_events(lines: list[str], events: list[smee.ServerSentEvent]) -> None:
    assert smee.parse_lines(lines) == events


STREAM = 'id: 0\nevent: ready\ndata: {}\n\ndata: {"s":"a\u2028b\u0085c"}\r\n\r\ndata: x\r\r'
STREAM_EVENTS = [
    E("ready", "{}", "0"),
    E(data='{"s":"a\u2028b\u0085c"}', id="0"),
    E(data="x", id="0"),
]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, len(STREAM)])
def test_stream_in_any_chunking_gives_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert smee.parse_stream(chunks) == STREAM_EVENTS


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        (["a\r\nb\nc\rd"], ["a", "b", "c"]),
        (["a\r", "\nb"], ["a"]),  # CRLF split across chunks is one line end
        (["a\r", "", "\n", "\nb\r", "c\n"], ["a", "", "b", "c"]),
        (["a\u2028b\x85c\x0bd\x0ce\x1cf\n"], ["a\u2028b\x85c\x0bd\x0ce\x1cf"]),
        (["\n\n\r\r\n"], ["", "", "", ""]),
    ],
)
def test_lines_end_only_at_cr_lf_or_crlf(chunks: list[str], lines: list[str]) -> None:
    splitter = smee.LineSplitter()
    assert [line for chunk in chunks for line in splitter.feed(chunk)] == lines


def test_decoder_keeps_state_between_feeds() -> None:
    decoder = smee.SseDecoder()
    assert decoder.feed("event: ready") is None
    assert decoder.feed("data: {}") is None
    assert decoder.feed("") == E("ready", "{}")
    assert decoder.feed("data: x") is None
    assert decoder.feed("") == E("message", "x")


# -- smee message -> request -------------------------------------------------


def smee_message(body: bytes, headers: dict[str, str], **extra: Any) -> str:
    message = {
        "host": "smee.io",
        "content-length": str(len(body)),
        "connection": "close",
        "accept-encoding": "gzip",
        **headers,
        "body": json.loads(body),
        "query": {},
        "timestamp": 1764000000000,
        **extra,
    }
    return js_stringify(json.dumps(message).encode()).decode()


def test_message_becomes_the_request_smee_client_sends() -> None:
    body = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[0])
    headers = signed_headers(body, "issues", guid="g-1", hook_id=12)
    headers["x-github-hook-installation-target-type"] = "repository"
    request = smee.forward_from(smee_message(body, headers, query={"a": "1", "b": ["2", "3"]}))
    assert request.body == js_stringify(body)
    assert request.headers == headers | {"content-type": "application/json"}
    assert request.query == {"a": "1", "b": ["2", "3"]}
    assert (request.event, request.guid) == ("issues", "g-1")


def test_body_text_is_forwarded_exactly_as_the_channel_carried_it() -> None:
    # Not parsed and written again: the spelling of numbers and escapes survives.
    data = '{"x-github-event":"ping","body":{"n":1e-7,"f":1.50,"s":"\\u001b\\/"} ,"query":{}}'
    assert smee.forward_from(data).body == b'{"n":1e-7,"f":1.50,"s":"\\u001b\\/"}'


def test_headers_that_cannot_be_sent_are_dropped() -> None:
    data = json.dumps(
        {
            "x-ok": "fine\tvalue é",
            "x-newline": "a\r\nInjected: yes",
            "x-wide": "日本",
            "x-number": 5,
            "set-cookie": ["a=1", "b=2"],
            "bad name": "x",
            "naïve": "x",
            "body": {},
        }
    )
    assert smee.forward_from(data).headers == {
        "x-ok": "fine\tvalue é",
        "set-cookie": "a=1, b=2",
        "content-type": "application/json",
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("not json", "not a JSON object"),
        ("[1, 2]", "not a JSON object"),
        ("{}", "no body"),
        ('{"x-github-event": "push"}', "no body"),
        ('{"body": {}', "not JSON"),
        ('{"body": {}} trailing', "text after"),
        ('{"body" {}}', "not a JSON object"),
    ],
)
def test_bad_messages_are_named(data: str, message: str) -> None:
    with pytest.raises(smee.BadMessageError, match=message):
        smee.forward_from(data)


# -- reconnecting ------------------------------------------------------------


class Stop(Exception):
    pass


async def test_reconnects_with_capped_exponential_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[httpx.Request] = []
    answers = iter(["refuse", "refuse", "refuse", "stream", "refuse", "refuse", "refuse"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posted.append(request)
            return httpx.Response(202)
        if next(answers) == "refuse":
            return httpx.Response(404, text="no such channel")
        body = b'event: ready\ndata: {}\n\ndata: {"x-github-event":"ping","body":{"a":1}}\n\n'
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    delays: list[float] = []

    async def no_sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 7:
            raise Stop

    monkeypatch.setattr(smee.asyncio, "sleep", no_sleep)
    forwarder = smee.Forwarder(
        "https://smee.test/chan",
        "http://daemon.test/webhooks/github",
        reconnect_policy=retry.RetryPolicy(base_seconds=1, max_seconds=4),
        transport=httpx.MockTransport(handler),
        rand=lambda: 1.0,
    )
    with pytest.raises(Stop):
        await forwarder.run()
    # 3 refusals, a stream that delivered (the count restarts), 3 refusals.
    assert delays == [1, 2, 4, 1, 2, 4, 4]
    assert forwarder.connections == 1
    assert [r.content for r in posted] == [b'{"a":1}']


async def test_forward_retries_while_the_receiver_is_not_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter(["connect-error", "503", "202"])
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        posts += 1
        answer = next(answers)
        if answer == "connect-error":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(int(answer))

    async def no_sleep(delay: float) -> None:
        pass

    monkeypatch.setattr(smee.asyncio, "sleep", no_sleep)
    forwarder = smee.Forwarder("https://smee.test/c", "http://d.test/w")
    request = smee.Forward({"x-github-event": "ping"}, b"{}", {})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        assert await forwarder._forward(client, request) == 202
    assert posts == 3


async def test_forward_gives_up_after_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    async def no_sleep(delay: float) -> None:
        pass

    monkeypatch.setattr(smee.asyncio, "sleep", no_sleep)
    forwarder = smee.Forwarder("https://smee.test/c", "http://d.test/w", forward_policy=FAST)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        assert await forwarder._forward(client, smee.Forward({}, b"{}", {})) is None


# -- against a local smee.io and a real daemon -------------------------------


@pytest.fixture
def config(tmp_path: Path) -> settings.Settings:
    return make_config(tmp_path, webhook={"accept_reserialized": True})


@pytest.fixture
async def channel_url() -> AsyncIterator[tuple[SmeeChannel, str]]:
    channel = SmeeChannel()
    async with live_server(channel.app) as base_url:
        yield channel, f"{base_url}/lab-channel"


@contextlib.asynccontextmanager
async def running(forwarder: smee.Forwarder) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(forwarder.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_forwards_into_the_daemon_with_githubs_headers(
    config: settings.Settings, channel_url: tuple[SmeeChannel, str]
) -> None:
    channel, source = channel_url
    sent: list[tuple[bytes, dict[str, str]]] = []
    for n, payload in enumerate(TRICKY_PAYLOADS):
        for m, style in enumerate(GITHUB_STYLES):
            body = github_body(payload, style)
            sent.append((body, signed_headers(body, "issues", guid=f"g-{n}-{m}", hook_id=77)))
    raw_body = js_stringify(sent[0][0])  # already in JSON.stringify's spelling
    sent.append((raw_body, signed_headers(raw_body, "issues", guid="g-raw")))

    daemon = app_mod.build(config, role=app_mod.Role.RECEIVER)
    db = Path(config.database.sqlite_path)
    async with live_server(daemon) as daemon_url:
        forwarder = smee.Forwarder(source, f"{daemon_url}/webhooks/github", rand=lambda: 0.0)
        async with running(forwarder):
            await channel.wait_for_subscribers(1)
            for body, headers in sent:
                await publish(source, body, headers)
            await wait_until(lambda: delivery_count(db) == len(sent), 20, "deliveries")

    rows = {row["guid"]: row for row in stored_deliveries(db)}
    assert len(rows) == len(sent)
    for body, headers in sent:
        row = rows[headers["x-github-delivery"]]
        assert row["body"] == js_stringify(body)
        assert row["event"] == "issues"
        assert row["content_type"] == "application/json"
        for name in ("x-github-event", "x-github-delivery", "x-hub-signature-256", "user-agent"):
            assert row["headers"][name] == headers[name]
        if headers["x-github-delivery"] == "g-raw":
            assert (row["hook_id"], row["signature_mode"]) == (0, "raw")
        else:
            assert (row["hook_id"], row["signature_mode"]) == (77, "reserialized")
    assert forwarder.forwarded == len(sent)


async def test_forwarded_request_carries_nothing_of_smees(
    channel_url: tuple[SmeeChannel, str],
) -> None:
    channel, source = channel_url
    seen: list[tuple[dict[str, str], bytes, str]] = []

    async def capture(request: Request) -> Response:
        seen.append((dict(request.headers), await request.body(), request.url.query))
        return Response(status_code=202)

    target_app = Starlette(routes=[Route("/hook", capture, methods=["POST"])])
    body = github_body(TRICKY_PAYLOADS[1], GITHUB_STYLES[1])
    headers = signed_headers(body, "ping", guid="g-h", hook_id=3) | {
        "x-github-hook-installation-target-id": "42"
    }
    async with live_server(target_app) as target_url:
        forwarder = smee.Forwarder(source, f"{target_url}/hook?keep=1")
        async with running(forwarder):
            await channel.wait_for_subscribers(1)
            await publish(f"{source}?from=github", body, headers)
            await wait_until(lambda: len(seen) == 1, 10, "the forward")
    got, got_body, query = seen[0]
    assert got_body == js_stringify(body)
    for name, value in headers.items():
        assert got[name] == value
    assert got["content-type"] == "application/json"
    assert got["content-length"] == str(len(got_body))
    assert "timestamp" not in got and "query" not in got and "body" not in got
    assert got["host"] == target_url.removeprefix("http://")  # not the channel's host
    assert sorted(query.split("&")) == ["from=github", "keep=1"]


async def test_reconnects_after_the_channel_drops_the_stream(
    config: settings.Settings, channel_url: tuple[SmeeChannel, str]
) -> None:
    channel, source = channel_url
    db = Path(config.database.sqlite_path)
    async with live_server(app_mod.build(config, role=app_mod.Role.RECEIVER)) as daemon_url:
        forwarder = smee.Forwarder(source, f"{daemon_url}/webhooks/github", reconnect_policy=FAST)
        async with running(forwarder):
            await channel.wait_for_subscribers(1)
            for round_ in range(3):
                body = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[round_])
                await publish(source, body, signed_headers(body, "issues", guid=f"r-{round_}"))
                await wait_until(lambda n=round_: delivery_count(db) == n + 1, 10, "delivery")
                channel.drop_streams()
                await wait_until(
                    lambda n=round_: channel.connections == n + 2 and len(channel.subscribers) == 1,
                    5,
                    "a new connection",
                )
    assert forwarder.connections == 4
    assert [r["guid"] for r in stored_deliveries(db)] == ["r-0", "r-1", "r-2"]
    assert {r["signature_mode"] for r in stored_deliveries(db)} == {"reserialized"}


async def test_cancelling_stops_at_once_even_mid_stream(
    channel_url: tuple[SmeeChannel, str],
) -> None:
    channel, source = channel_url
    forwarder = smee.Forwarder(source, "http://127.0.0.1:9/webhooks/github")
    task = asyncio.create_task(forwarder.run())
    await channel.wait_for_subscribers(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    await wait_until(lambda: not channel.subscribers, 5, "the stream to close")


# -- inside serve (config [smee] url) ----------------------------------------


async def test_serve_runs_the_forwarder_from_config(
    tmp_path: Path, channel_url: tuple[SmeeChannel, str]
) -> None:
    channel, source = channel_url
    port = free_port()
    config = make_config(
        tmp_path,
        server={"port": port},
        webhook={"accept_reserialized": True},
        smee={"url": source},
    )
    assert config.smee_target() == f"http://127.0.0.1:{port}/webhooks/github"
    web_app = app_mod.build(config)  # all roles: the worker processes it too
    daemon: app_mod.Daemon = web_app.state.daemon
    body = github_body(TRICKY_PAYLOADS[0], GITHUB_STYLES[0])
    db = Path(config.database.sqlite_path)
    async with live_server(web_app, port):
        assert daemon.smee_task is not None and not daemon.smee_task.done()
        await channel.wait_for_subscribers(1)
        await publish(source, body, signed_headers(body, "issues", guid="in-serve"))
        await wait_until(lambda: delivery_count(db) == 1, 10, "the delivery")
    # Stopped with the daemon, before the store closed.
    assert daemon.smee_task.cancelled()
    assert [(r["guid"], r["signature_mode"]) for r in stored_deliveries(db)] == [
        ("in-serve", "reserialized")
    ]


async def test_no_forwarder_without_url_or_without_a_receiver(tmp_path: Path) -> None:
    assert app_mod.build(make_config(tmp_path)).state.daemon.smee_forwarder is None
    worker = app_mod.build(
        make_config(tmp_path, smee={"url": "https://smee.io/x"}), role=app_mod.Role.WORKER
    )
    assert worker.state.daemon.smee_forwarder is None


def test_smee_urls_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        make_config(tmp_path, smee={"url": "smee.io/x"})
    config = make_config(tmp_path, smee={"target": "http://127.0.0.1:9000/hook"})
    assert config.smee_target() == "http://127.0.0.1:9000/hook"


# -- forgea-gh smee ------------------------------------------------------------


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "smee-cli.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "cli.db"}"\n'
        f'[webhook]\nsecrets = ["{SECRET}"]\n[log]\nlevel = "info"\nformat = "console"\n{extra}'
    )
    return path


async def test_cli_smee_forwards_until_sigterm(
    tmp_path: Path, config: settings.Settings, channel_url: tuple[SmeeChannel, str]
) -> None:
    channel, source = channel_url
    db = Path(config.database.sqlite_path)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FORGEA_GH_")}
    async with live_server(app_mod.build(config, role=app_mod.Role.RECEIVER)) as daemon_url:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "forgea_gh",
            "smee",
            source,
            "--target",
            f"{daemon_url}/webhooks/github",
            "--config",
            str(write_config(tmp_path)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=clean,
        )
        try:
            await channel.wait_for_subscribers(1, timeout=30)
            body = github_body(TRICKY_PAYLOADS[1], GITHUB_STYLES[3])
            await publish(source, body, signed_headers(body, "ping", guid="via-cli"))
            await wait_until(lambda: delivery_count(db) == 1, 10, "the delivery")
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 10)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, stderr.decode()
    log = stderr.decode()
    assert f"forwarding {source} to {daemon_url}/webhooks/github" in log
    assert "forwarded ping delivery via-cli" in log and ": 202" in log
    [row] = stored_deliveries(db)
    assert (row["body"], row["signature_mode"]) == (js_stringify(body), "reserialized")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no channel"),
        (["smee.io/x"], "is not an http(s) URL"),
        (["https://smee.io/x", "--target", "localhost:8000"], "is not an http(s) URL"),
    ],
)
async def test_cli_smee_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FORGEA_GH_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "forgea_gh",
        "smee",
        *args,
        "--config",
        str(write_config(tmp_path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert message in stderr.decode()
