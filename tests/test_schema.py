"""schema.sql: versioning, append-only triggers, pragmas."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from forgea_gh import errors
from forgea_gh.store import queries, schema, sqlite
from tests.support import ROOT


def test_schema_version_comes_from_schema_sql() -> None:
    assert schema.SCHEMA_VERSION == schema.version_of((ROOT / "schema.sql").read_text())
    assert schema.SCHEMA_VERSION >= 1


def test_schema_splits_into_complete_statements() -> None:
    parts = schema.statements(schema.schema_text())
    assert any(p.startswith("CREATE TRIGGER audit_log_no_delete") for p in parts)
    assert all(sqlite3.complete_statement(p + ";") for p in parts)


def test_named_queries_parse() -> None:
    parsed = queries.parse("-- name: a\n-- says a\nSELECT 1;\n\n-- name: b\nSELECT\n  2;\n")
    assert parsed == {"a": "SELECT 1", "b": "SELECT\n  2"}
    with pytest.raises(ValueError, match="defined twice"):
        queries.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    assert "claim_due" in sqlite.Q


async def test_open_sets_wal_and_version(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = sqlite.SqliteStore(str(path))
    await store.open()
    report = await store.check()
    await store.close()
    assert report.problems == []
    assert report.schema_version == schema.SCHEMA_VERSION
    assert report.facts["journal_mode"] == "wal"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    conn.close()


async def test_reopening_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        store = sqlite.SqliteStore(str(tmp_path / "x.db"))
        await store.open()
        await store.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = sqlite.SqliteStore(str(path))
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(errors.SchemaVersionError, match="newer than this forgea-gh supports"):
        await sqlite.SqliteStore(str(path)).open()


async def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE other (x)")
    conn.close()
    with pytest.raises(errors.SchemaVersionError, match="another program"):
        await sqlite.SqliteStore(str(path)).open()


def _raw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@pytest.fixture
def raw_db(tmp_path: Path) -> sqlite3.Connection:
    conn = _raw(tmp_path / "raw.db")
    schema.ensure(conn)
    now = "2026-11-23T00:00:00.000000Z"
    conn.execute(
        "INSERT INTO deliveries (guid, event, headers, content_type, body, body_sha256,"
        " received_at) VALUES ('g', 'push', '{}', 'application/json', x'7b7d', 'x', ?)",
        (now,),
    )
    conn.execute(
        "INSERT INTO jobs (kind, delivery_id, idempotency_key, max_attempts, next_attempt_at,"
        " created_at, updated_at) VALUES ('webhook', 1, 'k', 3, ?, ?, ?)",
        (now, now, now),
    )
    conn.execute(
        "INSERT INTO job_errors (job_id, attempt, error_class, message, occurred_at)"
        " VALUES (1, 1, 'E', 'm', ?)",
        (now,),
    )
    conn.execute(
        "INSERT INTO audit_log (occurred_at, actor, action) VALUES (?, 'test', 'x')", (now,)
    )
    return conn


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE deliveries SET event = 'ping'", "deliveries are immutable"),
        ("UPDATE job_errors SET message = 'other'", "job_errors is append-only"),
        ("UPDATE audit_log SET actor = 'someone else'", "audit_log is append-only"),
        ("DELETE FROM audit_log", "audit_log is append-only"),
    ],
)
def test_triggers_refuse_rewriting_history(
    raw_db: sqlite3.Connection, sql: str, message: str
) -> None:
    with pytest.raises(sqlite3.IntegrityError, match=message):
        raw_db.execute(sql)
    raw_db.close()


def test_constraints_guard_the_queue(raw_db: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        raw_db.execute("UPDATE jobs SET status = 'exploded'")
    with pytest.raises(sqlite3.IntegrityError):  # processing needs a lease
        raw_db.execute("UPDATE jobs SET status = 'processing'")
    with pytest.raises(sqlite3.IntegrityError):  # (guid, hook_id) is unique
        raw_db.execute(
            "INSERT INTO deliveries (guid, event, headers, content_type, body, body_sha256,"
            " received_at) VALUES ('g', 'push', '{}', 'application/json', x'7b7d', 'x', 'now')"
        )
    raw_db.close()


def test_deleting_a_job_takes_its_errors(raw_db: sqlite3.Connection) -> None:
    raw_db.execute("DELETE FROM jobs")
    assert raw_db.execute("SELECT count(*) FROM job_errors").fetchone()[0] == 0
    raw_db.close()


def _shape(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name"
    ).fetchall()


def test_schema_sql_equals_the_baseline_plus_every_migration(tmp_path: Path) -> None:
    fresh = _raw(tmp_path / "fresh.db")
    schema.ensure(fresh)

    migrated = _raw(tmp_path / "migrated.db")
    baseline = (Path(schema.__file__).parent / "migrations" / "0001_spine.sql").read_text()
    for statement in schema.statements(baseline):
        migrated.execute(statement)
    applied = schema.ensure(migrated)
    assert (applied.before, applied.after) == (1, schema.SCHEMA_VERSION)

    assert _shape(fresh) == _shape(migrated)
    for table in ("lab_status_transitions",):
        query = f"SELECT * FROM {table} ORDER BY 1, 2"
        assert fresh.execute(query).fetchall() == migrated.execute(query).fetchall()
    fresh.close()
    migrated.close()


def _store_delivery(conn: sqlite3.Connection, guid: str) -> tuple[int, str, int]:
    """Insert a delivery; its webhook job (made by the trigger): id, key, attempt budget."""
    now = "2026-11-23T00:00:00.000000Z"
    delivery_id = conn.execute(
        "INSERT INTO deliveries (guid, hook_id, event, headers, content_type, body, body_sha256,"
        " received_at) VALUES (?, 7, 'push', '{}', 'application/json', x'7b7d', 'x', ?)",
        (guid, now),
    ).lastrowid
    job: tuple[int, str, int] = conn.execute(
        "SELECT id, idempotency_key, max_attempts FROM jobs WHERE delivery_id = ?", (delivery_id,)
    ).fetchone()
    return job


def test_a_stored_delivery_gets_its_webhook_job_keyed_by_its_row_id(tmp_path: Path) -> None:
    conn = _raw(tmp_path / "keys.db")
    for script in list(schema.migrations().values())[:4]:  # a database at version 4
        for statement in schema.statements(script):
            conn.execute(statement)
    conn.execute("UPDATE queue_settings SET webhook_max_attempts = 3")
    assert _store_delivery(conn, "before") == (1, "webhook:before:7", 3)

    assert schema.ensure(conn).after == schema.SCHEMA_VERSION
    # Jobs made before keep their keys; new ones are keyed by the delivery's id.
    assert conn.execute("SELECT idempotency_key FROM jobs").fetchall() == [("webhook:before:7",)]
    assert _store_delivery(conn, "after") == (2, "webhook:2", 3)
    conn.close()


def test_migrations_are_numbered_without_gaps() -> None:
    found = schema.migrations()
    assert list(found) == list(range(1, schema.SCHEMA_VERSION + 1))


def test_daemons_starting_at_once_on_a_new_database(tmp_path: Path) -> None:
    """Each process must wait its turn for the switch to WAL, not fail."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGEA_GH_")}
    env["FORGEA_GH_DATABASE__URL"] = f"sqlite:///{tmp_path / 'shared.db'}"
    starts = [
        subprocess.Popen(
            [sys.executable, "-m", "forgea_gh", "db", "init"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outcomes = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in starts]
    for p in starts:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    assert [code for code, _ in outcomes] == [0] * 6, outcomes
