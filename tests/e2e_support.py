"""Helpers for the end-to-end tests against FakeGitHub: a daemon in-process, a fake on loopback.

The daemon (`app_mod.build`) runs in the test's event loop through `asgi_client`;
its GitHub client talks real HTTP to a FakeGitHub served by uvicorn on
127.0.0.1 (`support.live_server`). Everything is read back from the real
SQLite file with plain `sqlite3`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import stamina
from starlette.applications import Starlette

from forgea_gh import app as app_mod
from forgea_gh import settings
from tests import payloads
from tests.fake_github import FakeGitHub
from tests.support import asgi_client, live_server, make_config, signed_headers

API_TOKEN = "api-token"
GITHUB_TOKEN = "gh-e2e-token"
OWNER = "forgea"
CONTEXT = "forgea/verification"
# A polling bound: every wait in these tests ends well before it.
WAIT_SECONDS = 8.0


@contextlib.contextmanager
def fast_retries(attempts: int) -> Iterator[None]:
    """stamina in test mode (no sleeps, exactly `attempts` tries); restored afterwards."""
    stamina.set_testing(True, attempts=attempts)
    try:
        yield
    finally:
        stamina.set_testing(False)


@contextlib.asynccontextmanager
async def served_fake(fake: FakeGitHub | None = None) -> AsyncIterator[tuple[FakeGitHub, str]]:
    """A FakeGitHub on a free loopback port: (the fake, its base URL)."""
    fake = fake or FakeGitHub(token=GITHUB_TOKEN)
    async with live_server(fake) as url:
        yield fake, url


def github_settings(url: str | None, **extra: Any) -> dict[str, Any]:
    """The [github] section for a fake at `url`; None: no credentials at all."""
    if url is None:
        return {}
    values: dict[str, Any] = {
        "token": GITHUB_TOKEN,
        "api_url": url,
        "owner": OWNER,
        "max_wait_seconds": 0.5,
        "timeout_seconds": 2.0,
    }
    return values | extra


def config_for(
    tmp_path: Path, github_url: str | None, *, github: dict[str, Any] | None = None, **sections: Any
) -> settings.Settings:
    return make_config(
        tmp_path,
        api={"token": API_TOKEN},
        github=github_settings(github_url, **(github or {})),
        **sections,
    )


@dataclass
class Daemon:
    app: Starlette
    client: httpx.AsyncClient
    db: Path


@contextlib.asynccontextmanager
async def daemon(config: settings.Settings) -> AsyncIterator[Daemon]:
    """The daemon in-process with its lifespan running; the client carries the API token."""
    application = app_mod.build(config)
    async with asgi_client(application) as client:
        client.headers["Authorization"] = f"Bearer {API_TOKEN}"
        yield Daemon(application, client, Path(config.database.sqlite_path))


# -- the database -------------------------------------------------------------


def rows(db: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params).fetchall()]


def audit(db: Path, action: str | None = None) -> list[dict[str, Any]]:
    found = rows(db, "SELECT * FROM audit_log ORDER BY id")
    for row in found:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else None
    return [r for r in found if action is None or r["action"] == action]


def jobs_of(db: Path, kind: str) -> list[dict[str, Any]]:
    return rows(db, "SELECT * FROM jobs WHERE kind = ? ORDER BY id", kind)


# -- waiting ------------------------------------------------------------------


async def wait_for(
    what: str, check: Callable[[], Any], timeout: float = WAIT_SECONDS, interval: float = 0.02
) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def settle(db: Path, timeout: float = WAIT_SECONDS) -> list[dict[str, Any]]:
    """Wait until no job is pending, processing or failed (retrying); every job row."""

    def idle() -> list[dict[str, Any]] | None:
        found = rows(db, "SELECT * FROM jobs ORDER BY id")
        busy = [j for j in found if j["status"] in ("pending", "processing", "failed")]
        return None if busy else found or None

    result: list[dict[str, Any]] = await wait_for("the queue to drain", idle, timeout)
    return result


async def wait_for_job(
    db: Path, job_id: int, statuses: tuple[str, ...], timeout: float = WAIT_SECONDS
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        (job,) = rows(db, "SELECT * FROM jobs WHERE id = ?", job_id)
        return job if job["status"] in statuses else None

    found: dict[str, Any] = await wait_for(f"job {job_id} to be {statuses}", reached, timeout)
    return found


# -- the admin API and webhooks ------------------------------------------------


async def add_lab(
    client: httpx.AsyncClient, slug: str = "git-101", template: str = "forgea/git-101-template"
) -> dict[str, Any]:
    lab = await client.post(
        "/api/labs", json={"slug": slug, "title": "Git basics", "template_repository": template}
    )
    assert lab.status_code == 201, lab.text
    version = await client.post(f"/api/labs/{slug}/versions", json={"version": "v1"})
    assert version.status_code == 201, version.text
    body: dict[str, Any] = lab.json()
    return body


async def bind_session(
    client: httpx.AsyncClient,
    repo: dict[str, Any],
    *,
    login: str = "octocat",
    lab: str = "git-101",
    key: str | None = None,
) -> dict[str, Any]:
    """A session bound (ACTIVE) to a repository the fake knows (a `fake.add_repo` result)."""
    created = await client.post(
        "/api/sessions",
        json={
            "lab": lab,
            "user": {"login": login},
            "repository": {"id": repo["id"], "html_url": repo["html_url"]},
        },
        headers={"Idempotency-Key": key or f"bind-{repo['id']}"},
    )
    assert created.status_code == 201, created.text
    session: dict[str, Any] = created.json()
    assert session["status"] == "ACTIVE"
    assert session["repository"]["full_name"] == repo["full_name"]
    return session


def push_to(repo: dict[str, Any], commit_ids: list[int | str]) -> bytes:
    """A push of commits `payloads.commit(n)` to `repo`'s main branch."""
    return payloads.push(
        [payloads.commit(n) for n in commit_ids],
        repo_id=repo["id"],
        html_url=repo["html_url"],
        full_name=repo["full_name"],
    )


async def deliver(
    client: httpx.AsyncClient,
    body: bytes,
    event: str = "push",
    *,
    guid: str | None = None,
    hook_id: int | None = None,
) -> httpx.Response:
    return await client.post(
        "/webhooks/github",
        content=body,
        headers=signed_headers(body, event, guid=guid, hook_id=hook_id),
    )


async def session_status(client: httpx.AsyncClient, session_id: int) -> str:
    shown = await client.get(f"/api/sessions/{session_id}")
    assert shown.status_code == 200, shown.text
    status: str = shown.json()["status"]
    return status


async def wait_for_session(
    client: httpx.AsyncClient, session_id: int, status: str, timeout: float = WAIT_SECONDS
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        shown = (await client.get(f"/api/sessions/{session_id}")).json()
        return shown if shown["status"] == status else None

    found: dict[str, Any] = await wait_for(f"session {session_id} {status}", reached, timeout)
    return found


async def verify(
    client: httpx.AsyncClient, session_id: int, sha: str, outcome: str, key: str, **extra: Any
) -> dict[str, Any]:
    answer = await client.post(
        f"/api/sessions/{session_id}/verifications",
        json={"commit_sha": sha, "outcome": outcome, **extra},
        headers={"Idempotency-Key": key},
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def statuses_posted(fake: FakeGitHub, full_name: str, sha: str) -> list[dict[str, Any]]:
    """The statuses GitHub (the fake) accepted for a commit, oldest first."""
    return list(fake.statuses.get((full_name.lower(), sha), []))
