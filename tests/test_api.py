"""The admin API (/api): real app, real SQLite, pushes delivered as GitHub sends them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from forgea_gh import app as app_mod
from tests.support import asgi_client, make_config, signed_headers

TOKEN = "api-token"
REPO_URL = "https://github.com/octocat/demo-lab"
# Credentials for a GitHub nobody answers: enough to allow provisioning jobs.
UNREACHABLE_GITHUB = {"token": "gh-test-token", "api_url": "http://127.0.0.1:9", "owner": "forgea"}
SHAS = [f"{n:x}" * 40 for n in range(10, 15)]  # five distinct 40-hex commit ids


@contextlib.asynccontextmanager
async def api(
    tmp_path: Path, token: str = TOKEN, **sections: dict[str, Any]
) -> AsyncIterator[httpx.AsyncClient]:
    application = app_mod.build(make_config(tmp_path, api={"token": token}, **sections))
    async with asgi_client(application) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def rows(tmp_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "forgea.db")) as conn:
        return conn.execute(sql, params).fetchall()


async def add_lab(client: httpx.AsyncClient, slug: str = "demo", version: str = "v1") -> None:
    lab = await client.post(
        "/api/labs", json={"slug": slug, "title": "Demo", "template_repository": "forgea/demo"}
    )
    assert lab.status_code == 201, lab.text
    added = await client.post(f"/api/labs/{slug}/versions", json={"version": version})
    assert added.status_code == 201, added.text


async def bound_session(
    client: httpx.AsyncClient, repo_id: int = 4242, key: str = "bound-1"
) -> dict[str, Any]:
    created = await client.post(
        "/api/sessions",
        json={
            "lab": "demo",
            "user": {"login": "octocat"},
            "repository": {"id": repo_id, "html_url": REPO_URL},
        },
        headers={"Idempotency-Key": key},
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def push_payload(repo_id: int, shas: list[str]) -> bytes:
    commits = [
        {
            "id": sha,
            "message": f"step {n}",
            "timestamp": f"2026-11-23T12:0{n}:00Z",
            "author": {"name": "Octo Cat", "email": "octo@example.com", "username": "octocat"},
            "committer": {"name": "Octo Cat", "email": "octo@example.com", "username": "octocat"},
            "added": [f"step{n}.txt"],
            "modified": ["README.md"] if n else [],
            "removed": [],
        }
        for n, sha in enumerate(shas)
    ]
    payload = {
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": shas[-1],
        "created": False,
        "deleted": False,
        "forced": False,
        "repository": {
            "id": repo_id,
            "full_name": "octocat/demo-lab",
            "html_url": REPO_URL,
            "pushed_at": 1795435200,
        },
        "commits": commits,
        "head_commit": commits[-1],
    }
    return json.dumps(payload).encode()


async def push(client: httpx.AsyncClient, session: dict[str, Any], shas: list[str]) -> None:
    """Deliver a push to the session's repository and wait until the worker moved it."""
    body = push_payload(session["repository"]["id"], shas)
    delivered = await client.post("/webhooks/github", content=body, headers=signed_headers(body))
    assert delivered.status_code == 202, delivered.text
    for _ in range(300):
        current = (await client.get(f"/api/sessions/{session['id']}")).json()
        if current["status"] == "VERIFYING":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"session {session['id']} never became VERIFYING: {current}")


async def verify(
    client: httpx.AsyncClient, session_id: int, key: str, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/api/sessions/{session_id}/verifications", json=body, headers={"Idempotency-Key": key}
    )


# -- auth --------------------------------------------------------------------

ROUTES = [
    ("POST", "/api/labs"),
    ("POST", "/api/labs/demo/versions"),
    ("POST", "/api/sessions"),
    ("GET", "/api/sessions/1"),
    ("GET", "/api/sessions/1/attempts"),
    ("POST", "/api/sessions/1/verifications"),
    ("POST", "/api/sessions/1/abandon"),
]


async def test_every_route_needs_the_bearer_token(tmp_path: Path) -> None:
    async with api(tmp_path) as client:
        for method, path in ROUTES:
            missing = await client.request(method, path, headers={"Authorization": ""}, json={})
            assert missing.status_code == 401, path
            assert missing.json() == {"error": "missing bearer token"}
            wrong = await client.request(
                method, path, headers={"Authorization": "Bearer nope"}, json={}
            )
            assert wrong.status_code == 401, path
            assert wrong.json() == {"error": "invalid bearer token"}


async def test_the_api_is_disabled_without_a_token(tmp_path: Path) -> None:
    async with api(tmp_path, token="") as client:
        for method, path in ROUTES:
            answer = await client.request(method, path, json={})
            assert answer.status_code == 503, path
            assert answer.json() == {"error": "the admin API is disabled: set api.token"}


# -- labs --------------------------------------------------------------------


async def test_create_a_lab_and_its_versions(tmp_path: Path) -> None:
    async with api(tmp_path) as client:
        created = await client.post(
            "/api/labs",
            json={"slug": "git-101", "title": " Git basics ", "template_repository": "forgea/git"},
        )
        assert created.status_code == 201
        lab = created.json()
        assert {k: lab[k] for k in ("slug", "title", "template_repository")} == {
            "slug": "git-101",
            "title": "Git basics",
            "template_repository": "forgea/git",
        }
        again = await client.post(
            "/api/labs", json={"slug": "git-101", "title": "x", "template_repository": "a/b"}
        )
        assert again.status_code == 409
        assert again.json() == {"error": "lab 'git-101' exists already"}

        v1 = await client.post(
            "/api/labs/git-101/versions", json={"version": "v1", "template_ref": "release-1"}
        )
        assert v1.status_code == 201
        assert {k: v1.json()[k] for k in ("lab", "version", "template_ref")} == {
            "lab": "git-101",
            "version": "v1",
            "template_ref": "release-1",
        }
        v2 = await client.post("/api/labs/git-101/versions", json={"version": "v2"})
        assert v2.json()["template_ref"] == "main"
        duplicate = await client.post("/api/labs/git-101/versions", json={"version": "v1"})
        assert duplicate.status_code == 409
        unknown = await client.post("/api/labs/nope/versions", json={"version": "v1"})
        assert unknown.status_code == 404
        assert unknown.json() == {"error": "no lab 'nope'"}
    assert rows(tmp_path, "SELECT count(*) FROM labs") == [(1,)]
    assert rows(tmp_path, "SELECT count(*) FROM lab_versions") == [(2,)]


GOOD_LAB = {"slug": "demo", "title": "Demo", "template_repository": "forgea/demo"}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (GOOD_LAB | {"slug": "Not A Slug"}, "slug", "use 1-64 lower-case"),
        (GOOD_LAB | {"template_repository": "demo"}, "template_repository", "owner/name"),
        (GOOD_LAB | {"title": "   "}, "title", "must not be empty"),
        ({"slug": "demo", "template_repository": "a/b"}, "title", "Field required"),
        (GOOD_LAB | {"title": 7}, "title", "valid string"),
        (GOOD_LAB | {"colour": "red"}, "colour", "unknown field"),
    ],
)
async def test_lab_validation_names_the_field(
    tmp_path: Path, body: dict[str, Any], field: str, message: str
) -> None:
    async with api(tmp_path) as client:
        answer = await client.post("/api/labs", json=body)
    assert answer.status_code == 422
    assert answer.json()["field"] == field
    assert answer.json()["error"].startswith(f"{field}: ")
    assert message in answer.json()["error"]


async def test_unreadable_bodies_are_bad_requests(tmp_path: Path) -> None:
    async with api(tmp_path) as client:
        broken = await client.post("/api/labs", content=b"{not json")
        assert broken.status_code == 400
        assert "not valid JSON" in broken.json()["error"]
        listed = await client.post("/api/labs", json=[GOOD_LAB])
        assert listed.status_code == 400
        assert listed.json() == {"error": "the body must be a JSON object"}
        await add_lab(client)
        wrong_type = await client.post("/api/labs/demo/versions", json={"version": 2})
        assert (wrong_type.status_code, wrong_type.json()["field"]) == (422, "version")
        missing = await client.post("/api/labs/demo/versions", json={"template_ref": "main"})
        assert (missing.status_code, missing.json()["field"]) == (422, "version")


# -- sessions ----------------------------------------------------------------


async def test_a_session_bound_to_an_existing_repository_is_active(tmp_path: Path) -> None:
    async with api(tmp_path) as client:
        await add_lab(client)
        created = await client.post(
            "/api/sessions",
            json={
                "lab": "demo",
                "user": {"login": "octocat", "github_id": 583231},
                "repository": {"id": 4242, "html_url": REPO_URL + ".git"},
            },
            headers={"Idempotency-Key": "k-1"},
        )
        assert created.status_code == 201
        session = created.json()
        assert session["status"] == "ACTIVE"
        assert (session["lab"], session["version"]) == ("demo", "v1")
        assert session["user"]["login"] == "octocat"
        assert session["user"]["github_id"] == 583231
        assert session["repository"]["id"] == 4242
        assert session["repository"]["full_name"] == "octocat/demo-lab"
        shown = await client.get(f"/api/sessions/{session['id']}")
        assert shown.status_code == 200
        assert shown.json() == session
        assert (await client.get("/api/sessions/999")).status_code == 404
        assert (await client.get("/api/sessions/abc")).status_code == 404
    assert rows(tmp_path, "SELECT count(*) FROM jobs WHERE kind = 'provision_repo'") == [(0,)]


async def test_provisioning_without_github_credentials_is_503(tmp_path: Path) -> None:
    async with api(tmp_path) as client:
        await add_lab(client)
        refused = await client.post(
            "/api/sessions",
            json={"lab": "demo", "user": {"login": "mona"}},
            headers={"Idempotency-Key": "k-1"},
        )
        assert refused.status_code == 503
        assert "provisioning needs GitHub credentials" in refused.json()["error"]
    assert rows(tmp_path, "SELECT count(*) FROM lab_sessions") == [(0,)]
    assert rows(tmp_path, "SELECT count(*) FROM jobs") == [(0,)]


async def test_a_session_without_a_repository_is_provisioned(tmp_path: Path) -> None:
    async with api(tmp_path, github=UNREACHABLE_GITHUB) as client:
        await add_lab(client)
        created = await client.post(
            "/api/sessions",
            json={"lab": "demo", "version": "v1", "user": {"login": "mona"}},
            headers={"Idempotency-Key": "k-1"},
        )
        assert created.status_code == 202
        session = created.json()
        assert session["status"] == "PROVISIONING"
        assert session["repository"] is None
    (job,) = rows(tmp_path, "SELECT payload FROM jobs WHERE kind = 'provision_repo'")
    assert json.loads(job[0]) == {"session_id": session["id"]}


async def test_session_creation_is_idempotent(tmp_path: Path) -> None:
    body = {
        "lab": "demo",
        "user": {"login": "octocat"},
        "repository": {"id": 7, "html_url": REPO_URL},
    }
    async with api(tmp_path) as client:
        await add_lab(client)
        headers = {"Idempotency-Key": "same"}
        first = await client.post("/api/sessions", json=body, headers=headers)
        # The same body with its keys in another order is the same request.
        reordered = dict(reversed(list(body.items())))
        second = await client.post("/api/sessions", json=reordered, headers=headers)
        assert (second.status_code, second.json()) == (first.status_code, first.json())
        assert second.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers

        other = await client.post(
            "/api/sessions", json=body | {"user": {"login": "mona"}}, headers=headers
        )
        assert other.status_code == 422
        assert other.json()["field"] == "Idempotency-Key"
        assert "different request body" in other.json()["error"]

        missing = await client.post("/api/sessions", json=body)
        assert missing.status_code == 400
        assert missing.json() == {"error": "the Idempotency-Key header is required"}

        # The key belongs to this endpoint: verifications have their own.
        elsewhere = await verify(
            client, first.json()["id"], "same", commit_sha="a" * 40, outcome="passed"
        )
        assert elsewhere.status_code == 409  # the session is ACTIVE, not a key clash
    assert rows(tmp_path, "SELECT count(*) FROM lab_sessions") == [(1,)]
    assert rows(tmp_path, "SELECT count(*) FROM idempotency_keys") == [(1,)]


async def test_binding_a_repository_twice_conflicts(tmp_path: Path) -> None:
    async with api(tmp_path) as client:
        await add_lab(client)
        first = await bound_session(client, repo_id=99, key="a")
        again = await client.post(
            "/api/sessions",
            json={
                "lab": "demo",
                "user": {"login": "mona"},
                "repository": {"id": 99, "html_url": REPO_URL},
            },
            headers={"Idempotency-Key": "b"},
        )
        assert again.status_code == 409
        assert again.json() == {"error": f"repository 99 is bound to session {first['id']} already"}
        # A refused request stores no answer: the key is free for a corrected body.
        retried = await client.post(
            "/api/sessions",
            json={
                "lab": "demo",
                "user": {"login": "mona"},
                "repository": {"id": 100, "html_url": REPO_URL},
            },
            headers={"Idempotency-Key": "b"},
        )
        assert retried.status_code == 201
    assert rows(tmp_path, "SELECT count(*) FROM lab_sessions") == [(2,)]


GOOD_SESSION: dict[str, Any] = {"lab": "demo", "user": {"login": "octocat"}}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"lab": "demo"}, 422, "user"),
        (GOOD_SESSION | {"user": "octocat"}, 422, "user"),
        (GOOD_SESSION | {"user": {"login": "octocat", "github_id": "5"}}, 422, "user.github_id"),
        (GOOD_SESSION | {"user": {"login": "octocat", "github_id": True}}, 422, "user.github_id"),
        (GOOD_SESSION | {"user": {"login": "octocat", "email": "x"}}, 422, "user.email"),
        (GOOD_SESSION | {"user": {"login": "  "}}, 422, "user.login"),
        (GOOD_SESSION | {"version": "v9"}, 422, "version"),
        (GOOD_SESSION | {"repository": {"id": 0, "html_url": REPO_URL}}, 422, "repository.id"),
        (GOOD_SESSION | {"repository": {"id": 1}}, 422, "repository.html_url"),
        (
            GOOD_SESSION | {"repository": {"id": 1, "html_url": "github.com/octocat"}},
            422,
            "repository.html_url",
        ),
        (GOOD_SESSION | {"lab": "nope"}, 404, None),
    ],
)
async def test_session_validation(
    tmp_path: Path, body: dict[str, Any], status: int, field: str | None
) -> None:
    async with api(tmp_path) as client:
        await add_lab(client)
        answer = await client.post("/api/sessions", json=body, headers={"Idempotency-Key": "k"})
    assert answer.status_code == status, answer.text
    assert answer.json().get("field") == field
    assert rows(tmp_path, "SELECT count(*) FROM lab_sessions") == [(0,)]


async def test_a_lab_without_a_version_has_no_sessions(tmp_path: Path) -> None:
    async with api(tmp_path) as client:
        await client.post("/api/labs", json=GOOD_LAB)
        answer = await client.post(
            "/api/sessions", json=GOOD_SESSION, headers={"Idempotency-Key": "k"}
        )
    assert answer.status_code == 409
    assert "has no version yet" in answer.json()["error"]


# -- the ledger ----------------------------------------------------------------


async def test_attempts_are_paged_in_recording_order(tmp_path: Path) -> None:
    async with api(tmp_path) as client:
        await add_lab(client)
        session = await bound_session(client)
        empty = await client.get(f"/api/sessions/{session['id']}/attempts")
        assert empty.json() == {"items": [], "next_cursor": None}
        await push(client, session, SHAS)

        seen: list[dict[str, Any]] = []
        cursor: str | None = None
        pages = 0
        while True:
            params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
            page = await client.get(f"/api/sessions/{session['id']}/attempts", params=params)
            assert page.status_code == 200
            seen += page.json()["items"]
            pages += 1
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert [a["commit_sha"] for a in seen] == SHAS
        first = seen[0]
        assert first["branch"] == "main"
        assert first["author"] == {
            "name": "Octo Cat",
            "email": "octo@example.com",
            "login": "octocat",
        }
        assert first["changed_files"] == {"added": ["step0.txt"], "modified": [], "removed": []}
        everything = await client.get(f"/api/sessions/{session['id']}/attempts")
        assert len(everything.json()["items"]) == 5

        assert (await client.get("/api/sessions/999/attempts")).status_code == 404
        for bad in ({"limit": "0"}, {"limit": "501"}, {"cursor": "x"}, {"colour": "red"}):
            answer = await client.get(f"/api/sessions/{session['id']}/attempts", params=bad)
            assert answer.status_code == 400, bad


# -- verification results --------------------------------------------------------


async def test_a_passed_verification_completes_the_session(tmp_path: Path) -> None:
    async with api(tmp_path) as client:
        await add_lab(client)
        session = await bound_session(client)
        await push(client, session, SHAS[:2])
        body = {
            "commit_sha": SHAS[1].upper(),
            "outcome": "passed",
            "summary": "all checks green",
            "details_url": "https://ci.example/run/1",
        }
        passed = await verify(client, session["id"], "ci-1", **body)
        assert passed.status_code == 201, passed.text
        result = passed.json()
        assert result["verification"]["outcome"] == "passed"
        assert result["verification"]["commit_sha"] == SHAS[1]
        assert result["verification"]["lab_attempt_id"] is not None
        assert result["verification"]["summary"] == "all checks green"
        assert result["session"]["status"] == "COMPLETED"
        assert result["session"]["completed_at"] is not None
        count = "SELECT count(*) FROM verification_attempts WHERE outcome = 'passed'"
        assert rows(tmp_path, count) == [(1,)]

        replay = await verify(client, session["id"], "ci-1", **body)
        assert (replay.status_code, replay.json()) == (201, result)
        assert rows(tmp_path, count) == [(1,)]
        changed = await verify(client, session["id"], "ci-1", **body | {"outcome": "failed"})
        assert changed.status_code == 422
        assert changed.json()["field"] == "Idempotency-Key"

        late = await verify(client, session["id"], "ci-2", **body)
        assert late.status_code == 409
        assert "needs a VERIFYING session" in late.json()["error"]
        shown = (await client.get(f"/api/sessions/{session['id']}")).json()
        assert shown["status"] == "COMPLETED"

        # A finished session cannot be abandoned.
        abandoned = await client.post(f"/api/sessions/{session['id']}/abandon")
        assert abandoned.status_code == 409
        assert abandoned.json() == {"error": "a COMPLETED session cannot become ABANDONED"}


@pytest.mark.parametrize("outcome", ["failed", "error"])
async def test_a_failed_verification_returns_the_session_to_work(
    tmp_path: Path, outcome: str
) -> None:
    async with api(tmp_path) as client:
        await add_lab(client)
        session = await bound_session(client)
        await push(client, session, SHAS[:1])
        failed = await verify(client, session["id"], "ci-1", commit_sha=SHAS[0], outcome=outcome)
        assert failed.status_code == 201
        assert failed.json()["session"]["status"] == "ACTIVE"
        assert failed.json()["session"]["completed_at"] is None
        # The learner pushes again: verifying again, and this time it passes.
        await push(client, session, SHAS[:2])
        passed = await verify(client, session["id"], "ci-2", commit_sha=SHAS[1], outcome="passed")
        assert passed.json()["session"]["status"] == "COMPLETED"


async def test_verification_results_are_validated(tmp_path: Path) -> None:
    async with api(tmp_path) as client:
        await add_lab(client)
        session = await bound_session(client)
        sid = session["id"]
        active = await verify(client, sid, "k", commit_sha=SHAS[0], outcome="passed")
        assert active.status_code == 409
        assert "is ACTIVE" in active.json()["error"]
        await push(client, session, SHAS[:1])

        cases = [
            ({"commit_sha": SHAS[0], "outcome": "maybe"}, "outcome"),
            ({"commit_sha": "f" * 40, "outcome": "passed"}, "commit_sha"),
            ({"commit_sha": "not-a-sha", "outcome": "passed"}, "commit_sha"),
            ({"commit_sha": SHAS[0]}, "outcome"),
            ({"commit_sha": SHAS[0], "outcome": "passed", "score": 1}, "score"),
            ({"commit_sha": SHAS[0], "outcome": "passed", "summary": "x" * 4001}, "summary"),
        ]
        for body, field in cases:
            answer = await verify(client, sid, "k", **body)
            assert answer.status_code == 422, body
            assert answer.json()["field"] == field, body
        no_key = await client.post(
            f"/api/sessions/{sid}/verifications", json={"commit_sha": SHAS[0], "outcome": "passed"}
        )
        assert no_key.status_code == 400
        unknown = await verify(client, 999, "k", commit_sha=SHAS[0], outcome="passed")
        assert unknown.status_code == 404
        assert (await client.get(f"/api/sessions/{sid}")).json()["status"] == "VERIFYING"
    # Only the request the push made; nothing from the refused results.
    assert rows(tmp_path, "SELECT outcome FROM verification_attempts") == [("requested",)]


# -- abandon -------------------------------------------------------------------


async def test_abandon_is_repeatable(tmp_path: Path) -> None:
    async with api(tmp_path, github=UNREACHABLE_GITHUB) as client:
        await add_lab(client)
        session = await bound_session(client)
        first = await client.post(f"/api/sessions/{session['id']}/abandon")
        assert first.status_code == 200
        assert first.json()["status"] == "ABANDONED"
        again = await client.post(f"/api/sessions/{session['id']}/abandon")
        assert (again.status_code, again.json()) == (200, first.json())
        assert (await client.post("/api/sessions/999/abandon")).status_code == 404
        provisioning = await client.post(
            "/api/sessions", json=GOOD_SESSION, headers={"Idempotency-Key": "p"}
        )
        refused = await client.post(f"/api/sessions/{provisioning.json()['id']}/abandon")
        assert refused.status_code == 409
    transitions = "SELECT count(*) FROM audit_log WHERE action = 'session.transition'"
    assert rows(tmp_path, transitions) == [(1,)]
