"""The real npm smee-client against our daemon, beside `forgea-gh smee`'s forwarder.

A local stand-in for smee.io (tests/smee_channel.py) carries GitHub-style
deliveries (non-ASCII, control characters, "/", in GitHub's escaping) to
two subscribers: `npx smee-client` forwarding to one daemon and
smee.Forwarder forwarding to another. Both daemons must store every delivery
as "reserialized", with the body that node's own JSON.stringify produces.
Needs node and npx (skipped otherwise); the first run downloads smee-client
from the npm registry into npm's cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from forgea_gh import app as app_mod
from forgea_gh import smee
from tests.smee_channel import (
    GITHUB_STYLES,
    TRICKY_PAYLOADS,
    SmeeChannel,
    delivery_count,
    github_body,
    publish,
    stored_deliveries,
    wait_until,
)
from tests.support import live_server, make_config, signed_headers

NPX = shutil.which("npx")
NODE = shutil.which("node")
SMEE_CLIENT = "smee-client@5"
# The first run downloads the package; later runs start from npm's cache.
START_TIMEOUT = 120.0
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET")

pytestmark = pytest.mark.skipif(
    NPX is None or NODE is None,
    reason="node/npx not installed: the npm smee-client test needs them (apt install nodejs npm)",
)


def node_stringify(bodies: list[bytes]) -> list[bytes]:
    """JSON.stringify(JSON.parse(body)) by node itself."""
    assert NODE is not None
    script = (
        "const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(input.map(s => JSON.stringify(JSON.parse(s)))));"
    )
    result = subprocess.run(
        [NODE, "-e", script],
        input=json.dumps([b.decode() for b in bodies]).encode(),
        capture_output=True,
        check=True,
        timeout=30,
    )
    return [s.encode() for s in json.loads(result.stdout)]


async def stop_process_group(process: asyncio.subprocess.Process) -> None:
    """npx runs smee through a shell and node: end the whole group."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything the group left behind


async def test_npm_smee_client_and_forgea_gh_smee_land_the_same_bytes(tmp_path: Path) -> None:
    assert NPX is not None
    sent: list[tuple[bytes, dict[str, str]]] = []
    for n, payload in enumerate(TRICKY_PAYLOADS):
        for m, style in enumerate(GITHUB_STYLES):
            body = github_body(payload, style)
            sent.append((body, signed_headers(body, "issues", guid=f"npm-{n}-{m}", hook_id=5)))
    expected = dict(
        zip(
            (h["x-github-delivery"] for _, h in sent),
            node_stringify([b for b, _ in sent]),
            strict=True,
        )
    )
    configs = {}
    for name in ("npm", "own"):
        (tmp_path / name).mkdir()
        configs[name] = make_config(tmp_path / name, webhook={"accept_reserialized": True})
    dbs = {name: Path(c.database.sqlite_path) for name, c in configs.items()}
    npx_log = tmp_path / "npx.log"
    channel = SmeeChannel()
    env = os.environ | {
        # smee-client honours HTTP(S)_PROXY: never for the local servers.
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }
    async with (
        live_server(channel.app) as smee_base,
        live_server(app_mod.build(configs["npm"], role=app_mod.Role.RECEIVER)) as npm_daemon,
        live_server(app_mod.build(configs["own"], role=app_mod.Role.RECEIVER)) as own_daemon,
    ):
        source = f"{smee_base}/npm-channel"
        with npx_log.open("wb") as log_file:
            npx = await asyncio.create_subprocess_exec(
                NPX,
                "--yes",
                SMEE_CLIENT,
                "--url",
                source,
                "--target",
                f"{npm_daemon}/webhooks/github",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        forwarder = smee.Forwarder(source, f"{own_daemon}/webhooks/github")
        own = asyncio.create_task(forwarder.run())
        try:
            try:
                await wait_until(
                    lambda: len(channel.subscribers) >= 2 or npx.returncode is not None,
                    START_TIMEOUT,
                    f"npx {SMEE_CLIENT} to connect",
                )
            except TimeoutError:
                pytest.fail(f"npx {SMEE_CLIENT} did not connect:\n{npx_log.read_text()}")
            if npx.returncode is not None:
                output = npx_log.read_text()
                if any(code in output for code in NETWORK_ERRORS):
                    pytest.skip(f"the npm registry is unreachable:\n{output}")
                pytest.fail(f"npx {SMEE_CLIENT} exited with {npx.returncode}:\n{output}")
            for body, headers in sent:
                await publish(source, body, headers)
            await wait_until(
                lambda: all(delivery_count(db) == len(sent) for db in dbs.values()),
                30,
                f"both forwarders to deliver; npx log:\n{npx_log.read_text()}",
            )
        finally:
            own.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await own
            await stop_process_group(npx)

    stored = {name: {r["guid"]: r for r in stored_deliveries(db)} for name, db in dbs.items()}
    for body, headers in sent:
        guid = headers["x-github-delivery"]
        for name in ("npm", "own"):
            row = stored[name][guid]
            assert row["body"] == expected[guid], (name, guid)
            assert row["body"] != body  # what GitHub signed differs ...
            assert row["signature_mode"] == "reserialized"  # ... and still verified
            assert row["hook_id"] == 5
            for header in ("x-github-event", "x-hub-signature-256", "user-agent"):
                assert row["headers"][header] == headers[header]
    log = npx_log.read_text()
    assert f"Forwarding {source}" in log
    assert log.count(" - 202") == len(sent), log
