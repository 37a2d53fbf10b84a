"""Schema loading and versioning for SQLite.

`schema.sql` (top of the repository, shipped inside the wheel) is the single
source of the current shape, and its closing `PRAGMA user_version = N` is the
version. An older database is brought forward by the ordered files in
`migrations/` (`0002_name.sql` moves version 1 to 2); a newer one is refused,
because this daemon cannot know what it would break.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from forgea_gh import errors

_VERSION = re.compile(r"^PRAGMA user_version\s*=\s*(\d+);\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def schema_text() -> str:
    packaged = resources.files("forgea_gh").joinpath("schema.sql")
    if packaged.is_file():  # a built wheel
        return packaged.read_text(encoding="utf-8")
    # An editable install runs from the source tree, where schema.sql sits
    # beside the package.
    return (Path(__file__).resolve().parents[2] / "schema.sql").read_text(encoding="utf-8")


def version_of(script: str) -> int:
    found = _VERSION.findall(script)
    if len(found) != 1:
        raise ValueError("a schema script must set PRAGMA user_version exactly once")
    return int(found[0])


SCHEMA_VERSION = version_of(schema_text())


def migrations() -> dict[int, str]:
    """Migration scripts by the version each one reaches."""
    found: dict[int, str] = {}
    folder = resources.files("forgea_gh.store").joinpath("migrations")
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            script = entry.read_text(encoding="utf-8")
            target = int(match.group(1))
            if version_of(script) != target:
                raise ValueError(f"{entry.name} must end with PRAGMA user_version = {target};")
            found[target] = script
    return dict(sorted(found.items()))


def statements(script: str) -> list[str]:
    """Split a script into statements (triggers' BEGIN ... END stay whole)."""
    result: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                result.append(pending.strip())
            pending = ""
    if pending.strip() and not _only_comments(pending):
        raise ValueError(f"incomplete statement at the end of a schema script: {pending!r}")
    return result


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


@dataclass(frozen=True, slots=True)
class Applied:
    before: int
    after: int


def ensure(conn: sqlite3.Connection) -> Applied:
    """Bring the database to SCHEMA_VERSION in one IMMEDIATE transaction.

    Two processes starting at once are safe: the second waits for the
    first's write lock, then finds the schema in place.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = conn.execute("PRAGMA user_version").fetchone()[0]
        if before > SCHEMA_VERSION:
            raise errors.SchemaVersionError(
                f"database schema version {before} is newer than this forgea-gh "
                f"supports ({SCHEMA_VERSION}): upgrade forgea-gh"
            )
        if before == 0:
            if conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                raise errors.SchemaVersionError(
                    "the database has tables but no forgea_gh schema version: "
                    "is this another program's database?"
                )
            scripts = [schema_text()]
        else:
            scripts = [s for v, s in migrations().items() if before < v <= SCHEMA_VERSION]
            if len(scripts) != SCHEMA_VERSION - before:
                raise errors.SchemaVersionError(
                    f"no migration path from schema version {before} to {SCHEMA_VERSION}"
                )
        for script in scripts:
            for statement in statements(script):
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return Applied(before=before, after=SCHEMA_VERSION)


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])
