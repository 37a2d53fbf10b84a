"""`forgea-gh` commands, run as a user runs them: subprocesses against a real database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forgea_gh import app as app_mod
from forgea_gh import errors, jobs, processor, retry, webhook
from forgea_gh.handlers import registry
from forgea_gh.store import schema, sqlite
from tests.support import (
    FIXTURES,
    SECRET,
    asgi_client,
    live_server,
    make_config,
    push_body,
    signed_headers,
)
from tests.support import run_cli as forgea


async def make_dead_letters(db: Path, guids: list[str], event: str = "push") -> None:
    async def fail(claimed: jobs.ClaimedJob) -> str:
        raise errors.PermanentError("handler refused")

    store = sqlite.SqliteStore(str(db))
    await store.open()
    try:
        table = registry.default_router()
        table.on_event(event, fail)
        proc = processor.Processor(store, table, retry.RetryPolicy())
        for guid in guids:
            body = push_body()
            delivery = webhook.Delivery.from_http(
                signed_headers(body, event, guid=guid), body, [SECRET.encode()]
            )
            from forgea_gh import timeutil

            await store.enqueue_delivery(delivery, timeutil.utcnow())
        while await proc.run_once():
            pass
    finally:
        await store.close()


def test_db_init_and_check(tmp_path: Path) -> None:
    missing = forgea(tmp_path, "db", "check")
    assert missing.returncode == 1
    assert "run `forgea-gh db init`" in missing.stderr
    init = forgea(tmp_path, "db", "init")
    assert init.returncode == 0, init.stderr
    assert f"schema version {schema.SCHEMA_VERSION}" in init.stdout
    check = forgea(tmp_path, "db", "check", "--json")
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["problems"] == []
    assert report["journal_mode"] == "wal"


async def test_dead_letters_replay_and_status(tmp_path: Path) -> None:
    db = tmp_path / "forgea.db"
    await make_dead_letters(db, ["a-1", "a-2"], event="push")
    await make_dead_letters(db, ["b-1"], event="issues")

    status = json.loads(forgea(tmp_path, "status", "--json").stdout)
    assert status["jobs"]["dead_letter"] == 3

    listing = forgea(tmp_path, "dead-letters", "list", "--json", "--event", "push")
    items = json.loads(listing.stdout)["items"]
    assert sorted(i["guid"] for i in items) == ["a-1", "a-2"]
    human = forgea(tmp_path, "dead-letters", "list")
    assert "handler refused" in human.stdout

    shown = forgea(tmp_path, "dead-letters", "show", str(items[0]["id"]), "--payload", "--json")
    detail = json.loads(shown.stdout)
    assert detail["errors"][0]["error_class"] == "PermanentError"
    assert detail["payload"]["ref"] == "refs/tags/simple-tag"
    not_there = forgea(tmp_path, "dead-letters", "show", "999")
    assert not_there.returncode == 1
    assert not_there.stderr.strip() == "forgea-gh: no job 999"

    by_guid = json.loads(forgea(tmp_path, "replay", "--guid", "a-1", "--json").stdout)
    assert [r["previous_status"] for r in by_guid["replayed"]] == ["dead_letter"]
    by_event = json.loads(
        forgea(tmp_path, "replay", "--all-dead", "--event", "issues", "--json").stdout
    )
    assert len(by_event["replayed"]) == 1
    by_job = forgea(tmp_path, "replay", "--job", str(by_guid["replayed"][0]["job_id"]))
    assert by_job.returncode == 1  # already pending again: nothing to replay
    assert "is pending: only failed and dead-lettered jobs are replayed" in by_job.stderr
    status = json.loads(forgea(tmp_path, "status", "--json").stdout)
    assert status["jobs"]["dead_letter"] == 1
    assert status["jobs"]["pending"] == 2

    rest = forgea(tmp_path, "replay", "--all-dead")
    assert "1 job(s) queued again" in rest.stdout
    assert "nothing to replay" in forgea(tmp_path, "replay", "--all-dead").stdout
    usage = forgea(tmp_path, "replay")
    assert usage.returncode == 2
    # --event without --all-dead would be ignored; it is refused instead.
    filtered = forgea(tmp_path, "replay", "--guid", "b-1", "--event", "push")
    assert filtered.returncode == 2
    assert "--event filters --all-dead only" in filtered.stderr
    for limit in ("0", "501", "x"):
        refused = forgea(tmp_path, "dead-letters", "list", "--limit", limit)
        assert refused.returncode == 2, limit
        assert "--limit" in refused.stderr


async def test_deliver_signs_and_posts(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    # The server runs in this event loop: the CLI must run in a thread.
    async with live_server(app_mod.build(config, role=app_mod.Role.RECEIVER)) as base_url:
        port = base_url.rsplit(":", 1)[1]
        env = {"FORGEA_GH_SERVER__PORT": port}
        payload = str(FIXTURES / "push" / "payload.json")
        deliver = ["deliver", payload, "--event", "push", "--delivery", "d-1", "--hook-id", "77"]
        first = await asyncio.to_thread(forgea, tmp_path, *deliver, "--json", env=env)
        assert first.returncode == 0, first.stderr
        sent = json.loads(first.stdout)
        assert (sent["status_code"], sent["response"]["status"]) == (202, "stored")
        again = await asyncio.to_thread(forgea, tmp_path, *deliver, env=env)
        assert again.returncode == 0
        assert again.stdout.startswith("200 ")
        fresh = await asyncio.to_thread(
            forgea, tmp_path, "deliver", payload, "--event", "push", "--json", env=env
        )
        assert json.loads(fresh.stdout)["guid"] != "d-1"
        wrong_secret = await asyncio.to_thread(
            forgea,
            tmp_path,
            "deliver",
            payload,
            "--event",
            "push",
            env=env | {"FORGEA_GH_WEBHOOK__SECRETS": '["other"]'},
        )
        assert wrong_secret.returncode == 1
        assert wrong_secret.stdout.startswith("401 ")
    nobody = await asyncio.to_thread(
        forgea, tmp_path, "deliver", payload, "--event", "push", env=env
    )
    assert nobody.returncode == 1
    assert "cannot deliver" in nobody.stderr


def test_prune_validates_its_argument(tmp_path: Path) -> None:
    assert forgea(tmp_path, "prune", "--older-than", "-1").returncode == 2
    result = forgea(tmp_path, "prune", "--older-than", "0", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"jobs": 0, "deliveries": 0}


def test_serve_refuses_a_newer_database_in_one_line(tmp_path: Path) -> None:
    import sqlite3

    assert forgea(tmp_path, "db", "init").returncode == 0
    conn = sqlite3.connect(tmp_path / "forgea.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    result = forgea(tmp_path, "serve", "--port", "0")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("forgea-gh: database schema version 99 is newer")
    )


async def test_only_a_receiving_daemon_sets_the_webhook_attempt_budget(tmp_path: Path) -> None:
    import sqlite3

    def budget() -> int:
        conn = sqlite3.connect(tmp_path / "forgea.db")
        try:
            (value,) = conn.execute("SELECT webhook_max_attempts FROM queue_settings").fetchone()
            return int(value)
        finally:
            conn.close()

    receiving = sqlite.SqliteStore(str(tmp_path / "forgea.db"), max_attempts=3)
    await receiving.open()
    await receiving.close()
    assert budget() == 3
    config = make_config(tmp_path, worker={"max_attempts": 5})
    async with asgi_client(app_mod.build(config, role=app_mod.Role.WORKER)):
        pass
    assert budget() == 3  # a worker stores no deliveries: not its budget to set
    async with asgi_client(app_mod.build(config, role=app_mod.Role.RECEIVER)):
        pass
    assert budget() == 5
    # The CLI's config says 8 (the default): reading must not change the daemon's budget.
    for command in (["status"], ["dead-letters", "list"], ["db", "check"]):
        result = forgea(tmp_path, *command)
        assert result.returncode == 0, result.stderr
    assert budget() == 5


@pytest.mark.parametrize("command", [["db", "init"], ["serve", "--port", "0"]])
def test_a_database_path_that_cannot_be_made_stops_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    url = f"sqlite:///{tmp_path / 'a-file' / 'forgea.db'}"
    result = forgea(tmp_path, *command, env={"FORGEA_GH_DATABASE__URL": url})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("forgea-gh: cannot open SQLite database "), result.stderr


@pytest.mark.parametrize("command", [["status"], ["dead-letters", "list"], ["db", "check"]])
def test_every_command_takes_config(tmp_path: Path, command: list[str]) -> None:
    assert forgea(tmp_path, "db", "init").returncode == 0
    result = forgea(tmp_path, *command)
    assert result.returncode == 0, result.stderr


def test_config_may_come_before_the_command(tmp_path: Path) -> None:
    # Without it the daemon would look for the default secret and fail.
    assert forgea(tmp_path, "db", "init").returncode == 0
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FORGEA_GH_")}
    result = subprocess.run(
        [sys.executable, "-m", "forgea_gh", "--config", str(tmp_path / "config.toml"), "db",
         "check", "--json"],
        capture_output=True, text=True, timeout=60, check=False, env=clean,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == str(tmp_path / "forgea.db")
