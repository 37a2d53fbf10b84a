"""Named SQL queries, read once from a `.sql` file.

Each statement is headed by `-- name: <query_name>` and a line or more of
`--` description, as in procrastinate's queries.sql: the SQL stays SQL (an
editor highlights it, `sqlite3` runs it) and callers name what they run.
"""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Map each query name to its SQL, comments stripped."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    # parts: [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        sql = "\n".join(
            line
            for line in body.splitlines()
            if line.strip() and not line.lstrip().startswith("--")
        ).strip()
        if not sql:
            raise ValueError(f"query {name!r} has no SQL")
        queries[name] = sql.removesuffix(";")
    return queries


def load(filename: str) -> dict[str, str]:
    return parse(resources.files("forgea_gh.store").joinpath(filename).read_text("utf-8"))
