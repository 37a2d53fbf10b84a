"""The lab domain end to end on real SQLite: ledger, lifecycle, bindings, triggers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from forgea_gh import errors, jobs, processor, retry, timeutil, webhook
from forgea_gh.handlers import push, registry
from forgea_gh.labs import lifecycle, model, service
from forgea_gh.store import sqlite
from tests import payloads
from tests.support import FIXTURES, SECRET, signed_headers


async def make_session(
    store: sqlite.SqliteStore, *, bind: bool = True, fork_url: str | None = None, lab: str = "intro"
) -> model.Session:
    async def work(tx: Any) -> model.Session:
        if await tx.lab(lab) is None:
            await service.create_lab(tx, lab, "Intro", "forgea/intro-template", actor="test")
            await service.add_version(tx, lab, "v1", "main", actor="test")
        repo = (
            model.Repository(payloads.REPO_ID, "Codertocat/Hello-World", payloads.REPO_URL)
            if bind
            else None
        )
        request = service.NewSession(
            lab=lab, login="learner", repository=repo, user_fork_url=fork_url
        )
        return await service.start_session(tx, request, actor="test", max_attempts=3)

    return await store.transaction(work)


class Harness:
    def __init__(self, store: sqlite.SqliteStore) -> None:
        self.store = store
        self.proc = processor.Processor(
            store, registry.default_router(), retry.RetryPolicy(max_attempts=3), worker_id="t"
        )

    async def deliver(
        self, body: bytes, event: str = "push", guid: str | None = None
    ) -> dict[str, Any]:
        guid = guid or str(uuid.uuid4())
        delivery = webhook.Delivery.from_http(
            signed_headers(body, event, guid=guid), body, [SECRET.encode()]
        )
        result = await self.store.enqueue_delivery(delivery, timeutil.utcnow())
        while await self.proc.run_once():
            pass
        return self.row("SELECT * FROM jobs WHERE id = ?", result.job_id)

    def rows(self, sql: str, *params: object) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.store.path)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def row(self, sql: str, *params: object) -> dict[str, Any]:
        (found,) = self.rows(sql, *params)
        return found

    def status(self, session_id: int) -> str:
        return str(self.row("SELECT status FROM lab_sessions WHERE id = ?", session_id)["status"])

    def audit(self) -> list[str]:
        return [r["action"] for r in self.rows("SELECT action FROM audit_log ORDER BY id")]


@pytest.fixture
def harness(store: sqlite.SqliteStore) -> Harness:
    return Harness(store)


def test_lifecycle_table_equals_the_sql_table(tmp_path: Path) -> None:
    from forgea_gh.store import schema

    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    schema.ensure(conn)
    in_sql = set(conn.execute("SELECT from_status, to_status FROM lab_status_transitions"))
    conn.close()
    assert in_sql == {(a.value, b.value) for a, b in lifecycle.TRANSITIONS}
    assert lifecycle.allowed(lifecycle.Status.VERIFYING, lifecycle.Status.VERIFYING)
    assert not lifecycle.allowed(lifecycle.Status.COMPLETED, lifecycle.Status.ACTIVE)


async def test_multi_commit_push_records_each_commit_and_moves_to_verifying(
    harness: Harness, store: sqlite.SqliteStore
) -> None:
    session = await make_session(store)
    commits = [
        payloads.commit(1, added=["a.py"]),
        payloads.commit(2, modified=["a.py"]),
        payloads.commit(3, removed=["old.txt"], added=[]),
    ]
    job = await harness.deliver(payloads.push(commits), guid="push-1")
    assert job["status"] == "completed"
    assert (
        job["outcome"] == f"handled: 3 new of 3 commit(s) on main; session {session.id} VERIFYING"
    )
    ledger = harness.rows("SELECT * FROM lab_attempts ORDER BY id")
    assert [r["commit_sha"] for r in ledger] == [c["id"] for c in commits]
    first = ledger[0]
    assert (first["ref"], first["branch"], first["delivery_guid"], first["forced"]) == (
        "refs/heads/main",
        "main",
        "push-1",
        0,
    )
    assert (first["author_name"], first["author_email"], first["author_login"]) == (
        "Coder Tocat",
        "coder@example.com",
        "Codertocat",
    )
    assert (first["committer_name"], first["committer_login"]) == ("GitHub", "web-flow")
    assert json.loads(ledger[2]["removed"]) == ["old.txt"]
    assert first["commit_timestamp"] == "2026-11-23T10:00:00+01:00"
    assert first["pushed_at"] == "2019-05-15T15:20:57Z"  # repository.pushed_at, Unix seconds
    assert harness.status(session.id) == "VERIFYING"
    requested = harness.row("SELECT * FROM verification_attempts")
    assert (requested["outcome"], requested["commit_sha"]) == ("requested", commits[-1]["id"])
    assert requested["lab_attempt_id"] == ledger[-1]["id"]
    assert harness.audit()[-2:] == ["push.recorded", "session.transition"]


async def test_replays_and_redelivered_commits_add_no_rows(
    harness: Harness, store: sqlite.SqliteStore
) -> None:
    session = await make_session(store)
    body = payloads.push([payloads.commit(1), payloads.commit(2)])
    await harness.deliver(body, guid="p-1")
    version_after_first = harness.row("SELECT version FROM lab_sessions")["version"]
    # The handler run again on the same delivery (an operator's replay, or a
    # retry after a crash) writes nothing new.
    stored = harness.row("SELECT * FROM deliveries WHERE guid = 'p-1'")
    job_row = harness.row("SELECT * FROM jobs WHERE delivery_id = ?", stored["id"])
    claimed = jobs.ClaimedJob(jobs.Job.from_row(job_row), jobs.StoredDelivery.from_row(stored))
    outcome = await store.transaction(lambda tx: push.handle(claimed, tx))
    assert outcome == f"handled: 0 new of 2 commit(s) on main; session {session.id} VERIFYING"
    # The same commits under a new GUID, and again on another branch.
    again = await harness.deliver(body, guid="p-2")
    assert again["outcome"].startswith("handled: 0 new of 2 commit(s)")
    other_branch = payloads.push([payloads.commit(1), payloads.commit(2)], ref="refs/heads/dev")
    await harness.deliver(other_branch, guid="p-3")
    assert len(harness.rows("SELECT * FROM lab_attempts")) == 2
    assert len(harness.rows("SELECT * FROM verification_attempts")) == 1
    assert harness.row("SELECT version FROM lab_sessions")["version"] == version_after_first
    assert harness.status(session.id) == "VERIFYING"


async def test_synthetic_push_shapes(harness: Harness, store: sqlite.SqliteStore) -> None:
    await make_session(store)
    forced = payloads.push([payloads.commit("f1")], forced=True)
    no_login = payloads.push([payloads.commit("anon", login=None)])
    unicode = payloads.push([payloads.commit("u", message="Ünïcødé ✓ — 日本語 \u001b[0m/path")])
    await harness.deliver(forced)
    await harness.deliver(no_login)
    await harness.deliver(unicode)
    by_sha = {r["commit_sha"]: r for r in harness.rows("SELECT * FROM lab_attempts")}
    assert by_sha[payloads.sha("f1")]["forced"] == 1
    assert by_sha[payloads.sha("anon")]["author_login"] is None
    assert by_sha[payloads.sha("u")]["message"] == "Ünïcødé ✓ — 日本語 \u001b[0m/path"


async def test_push_of_2048_commits(harness: Harness, store: sqlite.SqliteStore) -> None:
    await make_session(store)
    commits = [payloads.commit(n) for n in range(2048)]
    job = await harness.deliver(payloads.push(commits))
    assert job["status"] == "completed"
    assert harness.row("SELECT count(*) AS n FROM lab_attempts")["n"] == 2048


async def test_tag_pushes_and_deletions_are_audited_not_recorded(
    harness: Harness, store: sqlite.SqliteStore
) -> None:
    session = await make_session(store)
    tag = (FIXTURES / "push" / "payload.json").read_bytes()  # refs/tags/simple-tag
    deletion = payloads.push([], ref="refs/heads/feature", deleted=True)
    assert (await harness.deliver(tag))["outcome"].startswith("ignored: refs/tags/simple-tag")
    assert (await harness.deliver(deletion))["outcome"] == "ignored: refs/heads/feature (deleted)"
    assert harness.rows("SELECT * FROM lab_attempts") == []
    assert harness.status(session.id) == "ACTIVE"
    assert harness.audit().count("push.not_recorded") == 2


async def test_every_push_fixture_processes_without_dead_letter(
    harness: Harness, store: sqlite.SqliteStore
) -> None:
    await make_session(store)
    for path in sorted((FIXTURES / "push").glob("*.json")):
        job = await harness.deliver(path.read_bytes())
        assert job["status"] == "completed", (path.name, job["last_error"])
    # with-new-branch and with-no-username-committer carry the same commit.
    assert harness.row("SELECT count(*) AS n FROM lab_attempts")["n"] == 1


async def test_unknown_repository_is_completed_and_audited(
    harness: Harness, store: sqlite.SqliteStore
) -> None:
    await make_session(store)
    job = await harness.deliver(payloads.push([payloads.commit(1)], repo_id=999))
    assert (job["status"], job["outcome"]) == (
        "completed",
        "ignored: repository 999 is not bound to a lab session",
    )
    assert harness.rows("SELECT * FROM lab_attempts") == []
    assert harness.audit()[-1] == "push.unbound"


async def test_binding_is_backfilled_from_the_fork_url(
    harness: Harness, store: sqlite.SqliteStore
) -> None:
    session = await make_session(
        store, bind=False, fork_url="https://GitHub.com/Codertocat/Hello-World.git/"
    )
    assert session.status == lifecycle.Status.ACTIVE
    assert session.user_fork_url == payloads.REPO_URL.lower()
    await harness.deliver(payloads.push([payloads.commit(1)]))
    mapping = harness.row("SELECT * FROM github_repo_mappings")
    assert (mapping["provider_repo_id"], mapping["lab_session_id"]) == (
        payloads.REPO_ID,
        session.id,
    )
    assert "repository.bound" in harness.audit()
    assert harness.status(session.id) == "VERIFYING"


async def test_renamed_repository_still_binds(harness: Harness, store: sqlite.SqliteStore) -> None:
    session = await make_session(store)
    renamed = payloads.repository_event(
        "renamed",
        full_name="Codertocat/Lab-Work",
        html_url="https://github.com/Codertocat/Lab-Work",
    )
    job = await harness.deliver(renamed, "repository")
    assert job["outcome"] == f"handled: repository {payloads.REPO_ID} is now Codertocat/Lab-Work"
    mapping = harness.row("SELECT * FROM github_repo_mappings")
    assert (mapping["full_name"], mapping["html_url"]) == (
        "Codertocat/Lab-Work",
        "https://github.com/Codertocat/Lab-Work",
    )
    moved = payloads.push(
        [payloads.commit(1)],
        full_name="Codertocat/Lab-Work",
        html_url="https://github.com/Codertocat/Lab-Work",
    )
    await harness.deliver(moved)
    assert harness.row("SELECT lab_session_id FROM lab_attempts")["lab_session_id"] == session.id
    transferred = payloads.repository_event(
        "transferred", full_name="forgea/Lab-Work", html_url="https://github.com/forgea/Lab-Work"
    )
    await harness.deliver(transferred, "repository")
    assert harness.row("SELECT full_name FROM github_repo_mappings")["full_name"] == (
        "forgea/Lab-Work"
    )
    assert {"repository.renamed", "repository.transferred"} <= set(harness.audit())


async def test_deleted_repository_abandons_the_session(
    harness: Harness, store: sqlite.SqliteStore
) -> None:
    session = await make_session(store)
    deleted = payloads.repository_event(
        "deleted", full_name="Codertocat/Hello-World", html_url=payloads.REPO_URL
    )
    await harness.deliver(deleted, "repository")
    assert harness.status(session.id) == "ABANDONED"
    # A push after that is still recorded, and moves nothing.
    job = await harness.deliver(payloads.push([payloads.commit(9)]))
    assert job["outcome"].endswith(f"session {session.id} stays ABANDONED")
    assert len(harness.rows("SELECT * FROM lab_attempts")) == 1
    assert harness.rows("SELECT * FROM verification_attempts") == []


async def test_installation_repositories_removed_is_audited(
    harness: Harness, store: sqlite.SqliteStore
) -> None:
    await make_session(store)
    body = (FIXTURES / "installation_repositories" / "removed.payload.json").read_bytes()
    job = await harness.deliver(body, "installation_repositories")
    assert job["status"] == "completed"
    entry = harness.rows(
        "SELECT * FROM audit_log WHERE action = ?", "installation.repository_removed"
    )
    assert [json.loads(e["detail"])["repository_id"] for e in entry] == [1296269]


async def test_concurrent_transitions_from_one_version_one_wins(store: sqlite.SqliteStore) -> None:
    session = await make_session(store)

    async def move(target: lifecycle.Status) -> model.Session:
        return await store.transaction(
            lambda tx: service.transition(tx, session, target, actor="test", reason="race")
        )

    results = await asyncio.gather(
        move(lifecycle.Status.VERIFYING), move(lifecycle.Status.ABANDONED), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, model.Session)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], errors.ConflictError)
    assert "is stale" in str(losers[0])
    assert winners[0].version == session.version + 1


async def test_illegal_transition_is_refused_with_a_reason(store: sqlite.SqliteStore) -> None:
    session = await make_session(store)
    with pytest.raises(lifecycle.IllegalTransition, match="a ACTIVE session cannot become"):
        await store.transaction(
            lambda tx: service.transition(
                tx, session, lifecycle.Status.COMPLETED, actor="t", reason="x"
            )
        )


async def test_session_expiry(harness: Harness, store: sqlite.SqliteStore) -> None:
    from datetime import timedelta

    from forgea_gh import scheduler

    idle = await make_session(store)
    assert await scheduler.expire_sessions(store, timedelta(days=1)) == []
    assert await scheduler.expire_sessions(store, timedelta(seconds=-1)) == [idle.id]
    assert harness.status(idle.id) == "EXPIRED"


def _raw(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE lab_attempts SET message = 'rewritten'", "lab_attempts is append-only"),
        ("DELETE FROM lab_attempts", "lab_attempts is append-only"),
        (
            "UPDATE verification_attempts SET outcome = 'passed'",
            "verification_attempts is append-only",
        ),
        ("DELETE FROM verification_attempts", "verification_attempts is append-only"),
        ("UPDATE audit_log SET action = 'x'", "audit_log is append-only"),
        ("DELETE FROM audit_log", "audit_log is append-only"),
        ("UPDATE lab_versions SET template_ref = 'other'", "lab_versions are immutable"),
        ("DELETE FROM lab_versions", "lab_versions are immutable"),
        ("UPDATE lab_sessions SET status = 'PROVISIONING_FAILED'", "status change not allowed"),
        ("UPDATE lab_sessions SET status = 'PROVISIONING'", "status change not allowed"),
        ("UPDATE lab_sessions SET lab_version_id = 2", "cannot change"),
    ],
)
async def test_raw_sql_cannot_break_the_rules(
    harness: Harness, store: sqlite.SqliteStore, sql: str, message: str
) -> None:
    await make_session(store)
    await harness.deliver(payloads.push([payloads.commit(1)]))  # ledger + verification rows
    conn = _raw(store.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match=message):
            conn.execute(sql)
        # Staying in the same status is allowed.
        conn.execute("UPDATE lab_sessions SET status = status, preview_url = 'x'")
    finally:
        conn.close()


async def test_a_version_of_another_lab_is_refused(store: sqlite.SqliteStore) -> None:
    await make_session(store, lab="intro")
    await make_session(store, lab="advanced", bind=False)
    conn = _raw(store.path)
    try:
        other = conn.execute(
            "SELECT v.id FROM lab_versions v JOIN labs l ON l.id = v.lab_id"
            " WHERE l.slug = 'advanced'"
        ).fetchone()[0]
        intro = conn.execute("SELECT id FROM labs WHERE slug = 'intro'").fetchone()[0]
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            conn.execute(
                "INSERT INTO lab_sessions (user_id, lab_id, lab_version_id, status, started_at,"
                " last_activity_at) VALUES (1, ?, ?, 'ACTIVE', 'now', 'now')",
                (intro, other),
            )
        with pytest.raises(sqlite3.IntegrityError, match="starts PROVISIONING or ACTIVE"):
            conn.execute(
                "INSERT INTO lab_sessions (user_id, lab_id, lab_version_id, status, started_at,"
                " last_activity_at) VALUES (1, ?, ?, 'COMPLETED', 'now', 'now')",
                (intro, 1),
            )
    finally:
        conn.close()


async def test_rule_violations_reach_the_application_as_one_error(
    store: sqlite.SqliteStore,
) -> None:
    session = await make_session(store)

    async def rewrite(tx: Any) -> None:
        await tx.set_status(session, lifecycle.Status.COMPLETED)  # skips the Python check

    with pytest.raises(errors.RuleViolation, match="status change not allowed"):
        await store.transaction(rewrite)
