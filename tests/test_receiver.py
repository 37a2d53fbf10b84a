"""POST /webhooks/github: every status code of DESIGN §6, through the real app and store."""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from forgea_gh import app as app_mod
from forgea_gh import settings, webhook
from tests.support import asgi_client, make_config, push_body, signed_headers

URL = "/webhooks/github"


def count(config: settings.Settings, table: str = "deliveries") -> int:
    conn = sqlite3.connect(config.database.sqlite_path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def cfg(tmp_path: Path) -> settings.Settings:
    return make_config(
        tmp_path,
        webhook={"max_body_bytes": 64 * 1024, "secrets": ["new-secret", "test-secret"]},
        database={"busy_timeout_ms": 200},
    )


@pytest.fixture
async def client(cfg: settings.Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app_mod.build(cfg, role=app_mod.Role.RECEIVER)) as c:
        yield c


async def test_new_delivery_is_202_after_commit(
    client: httpx.AsyncClient, cfg: settings.Settings
) -> None:
    body = push_body()
    response = await client.post(URL, content=body, headers=signed_headers(body, guid="g1"))
    assert response.status_code == 202
    assert response.json()["status"] == "stored"
    # Committed: another connection sees the row at once.
    conn = sqlite3.connect(cfg.database.sqlite_path)
    row = conn.execute("SELECT guid, hook_id, event, body FROM deliveries").fetchone()
    job = conn.execute("SELECT kind, status FROM jobs").fetchone()
    conn.close()
    assert row == ("g1", 0, "push", body)
    assert job == ("webhook", "pending")


async def test_duplicate_is_200_and_stores_nothing(
    client: httpx.AsyncClient, cfg: settings.Settings
) -> None:
    body = push_body()
    headers = signed_headers(body, guid="dup", hook_id=9)
    assert (await client.post(URL, content=body, headers=headers)).status_code == 202
    again = await client.post(URL, content=body, headers=headers)
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert count(cfg) == 1
    assert count(cfg, "jobs") == 1


async def test_rotated_secret_verifies(client: httpx.AsyncClient, cfg: settings.Settings) -> None:
    body = push_body()
    for secret in ("new-secret", "test-secret"):
        response = await client.post(URL, content=body, headers=signed_headers(body, secret=secret))
        assert response.status_code == 202
    assert count(cfg) == 2


async def test_form_encoded_delivery_is_accepted(
    client: httpx.AsyncClient, cfg: settings.Settings
) -> None:
    body = urllib.parse.urlencode({"payload": push_body().decode()}).encode()
    headers = signed_headers(body, content_type=webhook.FORM)
    assert (await client.post(URL, content=body, headers=headers)).status_code == 202
    conn = sqlite3.connect(cfg.database.sqlite_path)
    content_type, repo = conn.execute(
        "SELECT content_type, repository_id FROM deliveries"
    ).fetchone()
    conn.close()
    assert content_type == webhook.FORM
    assert repo == json.loads(push_body())["repository"]["id"]


@pytest.mark.parametrize(
    ("mutate", "status", "message"),
    [
        (lambda h, b: h.pop("x-github-event"), 400, "missing X-GitHub-Event"),
        (lambda h, b: h.pop("x-github-delivery"), 400, "missing X-GitHub-Delivery"),
        (lambda h, b: h.update({"x-github-hook-id": "-1"}), 400, "X-GitHub-Hook-ID"),
        (lambda h, b: h.pop("x-hub-signature-256"), 401, "missing X-Hub-Signature-256"),
        (
            lambda h, b: h.update({"x-hub-signature-256": webhook.sign(b, b"wrong")}),
            401,
            "does not match",
        ),
        (lambda h, b: h.update({"content-type": "text/plain"}), 415, "unsupported content type"),
    ],
)
async def test_rejections_store_nothing(
    client: httpx.AsyncClient, cfg: settings.Settings, mutate: object, status: int, message: str
) -> None:
    body = push_body()
    headers = signed_headers(body)
    mutate(headers, body)  # type: ignore[operator]
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert count(cfg) == 0


@pytest.mark.parametrize("body", [b"{not json", b"[]", b""])
async def test_invalid_body_is_400(
    client: httpx.AsyncClient, cfg: settings.Settings, body: bytes
) -> None:
    response = await client.post(URL, content=body, headers=signed_headers(body))
    assert response.status_code == 400
    assert count(cfg) == 0


async def test_body_over_the_limit_is_413(
    client: httpx.AsyncClient, cfg: settings.Settings
) -> None:
    body = json.dumps({"filler": "x" * 70_000}).encode()
    response = await client.post(URL, content=body, headers=signed_headers(body))
    assert response.status_code == 413
    assert "webhook.max_body_bytes" in response.json()["error"]
    assert count(cfg) == 0


async def test_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, cfg: settings.Settings
) -> None:
    body = json.dumps({"filler": "x" * 70_000}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    # No Content-Length: the limit must hold while reading.
    response = await client.post(URL, content=chunks(), headers=signed_headers(body))
    assert response.status_code == 413
    assert count(cfg) == 0


async def test_store_that_cannot_commit_is_503_never_2xx(
    client: httpx.AsyncClient, cfg: settings.Settings
) -> None:
    blocker = sqlite3.connect(cfg.database.sqlite_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        body = push_body()
        response = await client.post(URL, content=body, headers=signed_headers(body, guid="x"))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "could not be stored" in response.json()["error"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert count(cfg) == 0
    # Once the lock is gone, the same delivery (GitHub's redelivery) is stored.
    response = await client.post(URL, content=body, headers=signed_headers(body, guid="x"))
    assert response.status_code == 202


async def test_get_is_not_allowed(client: httpx.AsyncClient) -> None:
    assert (await client.get(URL)).status_code == 405


async def test_worker_role_has_no_receiver(cfg: settings.Settings) -> None:
    async with asgi_client(app_mod.build(cfg, role=app_mod.Role.WORKER)) as c:
        body = push_body()
        assert (await c.post(URL, content=body, headers=signed_headers(body))).status_code == 404
        assert (await c.get("/readyz")).status_code == 200


async def test_a_failing_batch_never_stops_the_ingest_writer(
    client: httpx.AsyncClient, cfg: settings.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgea_gh.store import sqlite as sqlite_store

    real = sqlite_store._ingest
    calls = 0

    def broken_once(conn: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in one batch")
        return real(conn, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite_store, "_ingest", broken_once)
    body = push_body()
    first = await client.post(URL, content=body, headers=signed_headers(body, guid="b-1"))
    assert first.status_code == 503
    second = await client.post(URL, content=body, headers=signed_headers(body, guid="b-2"))
    assert second.status_code == 202
    again = await client.post(URL, content=body, headers=signed_headers(body, guid="b-1"))
    assert again.status_code == 202  # the failed one was not stored: its redelivery is new
    assert count(cfg) == 2
