"""Helpers shared by the tests: configs, signed requests, clocks, servers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from forgea_gh import settings, webhook

ROOT = Path(__file__).resolve().parents[1]
SECRET = "test-secret"
FIXTURES = Path(
    os.environ.get("FORGEA_GH_FIXTURES", ROOT.parent / "shared" / "fixtures" / "github-payloads")
)


def fixture_payloads() -> Iterator[tuple[str, Path]]:
    """(event, path) of every real GitHub payload in shared/fixtures."""
    for path in sorted(FIXTURES.glob("*/*.json")):
        yield path.parent.name, path


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> settings.Settings:
    """Settings for a test: its own database file, a known secret, fast retries."""
    values: dict[str, dict[str, Any]] = {
        "database": {"url": f"sqlite:///{tmp_path / 'forgea.db'}"},
        "webhook": {"secrets": [SECRET]},
        "worker": {
            "poll_interval_seconds": 0.2,
            "backoff_base_seconds": 0.01,
            "backoff_max_seconds": 0.05,
            "lease_seconds": 30,
        },
        "log": {"level": "warning", "format": "console"},
    }
    for name, overrides in sections.items():
        values.setdefault(name, {}).update(overrides)
    return settings.Settings.model_validate(values)


def signed_headers(
    body: bytes,
    event: str = "push",
    *,
    guid: str | None = None,
    hook_id: int | None = None,
    secret: str = SECRET,
    content_type: str = webhook.JSON,
) -> dict[str, str]:
    headers = {
        "content-type": content_type,
        "x-github-event": event,
        "x-github-delivery": guid or str(uuid.uuid4()),
        "x-hub-signature-256": webhook.sign(body, secret.encode()),
        "user-agent": "GitHub-Hookshot/test",
    }
    if hook_id is not None:
        headers["x-github-hook-id"] = str(hook_id)
    return headers


def push_body(**extra: Any) -> bytes:
    payload = json.loads((FIXTURES / "push" / "payload.json").read_bytes())
    payload.update(extra)
    return json.dumps(payload).encode()


class FakeClock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@contextlib.asynccontextmanager
async def asgi_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://forgea.test") as client:
            yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def live_server(app: Starlette, port: int | None = None) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on loopback (a free port unless `port` is given); stop on exit."""
    port = free_port() if port is None else port
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        else:
            raise TimeoutError("uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


def run_cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, extra_config: str = ""
) -> subprocess.CompletedProcess[str]:
    """`forgea-gh ARGS --config <tmp_path>/config.toml` as a user runs it, in a subprocess.

    The config (written once) points at `<tmp_path>/forgea.db` and the test
    secret; `FORGEA_GH_*` variables of the test run are dropped, `env` added.
    """
    config = tmp_path / "config.toml"
    if not config.exists():
        config.write_text(
            f'[database]\nurl = "sqlite:///{tmp_path / "forgea.db"}"\n'
            f'[webhook]\nsecrets = ["{SECRET}"]\n[log]\nlevel = "warning"\n' + extra_config
        )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FORGEA_GH_")}
    return subprocess.run(
        [sys.executable, "-m", "forgea_gh", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean | (env or {}),
    )


@functools.cache
def rsa_key_pair() -> tuple[str, str]:
    """A GitHub App style RSA key pair (private PKCS#8 PEM, public PEM), made once per run."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public
