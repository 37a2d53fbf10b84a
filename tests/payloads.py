"""A payload factory for push and repository events, built on the real fixtures."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from tests.support import FIXTURES

_PUSH = json.loads((FIXTURES / "push" / "with-new-branch.payload.json").read_bytes())

REPO_ID = 186853002
REPO_URL = "https://github.com/Codertocat/Hello-World"


def sha(n: int | str) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


def commit(
    n: int | str,
    *,
    message: str | None = None,
    login: str | None = "Codertocat",
    added: list[str] | None = None,
    modified: list[str] | None = None,
    removed: list[str] | None = None,
) -> dict[str, Any]:
    author: dict[str, Any] = {"name": "Coder Tocat", "email": "coder@example.com"}
    if login is not None:
        author["username"] = login
    return {
        "id": sha(n),
        "tree_id": sha(f"tree-{n}"),
        "distinct": True,
        "message": message if message is not None else f"commit {n}",
        "timestamp": "2026-11-23T10:00:00+01:00",
        "url": f"{REPO_URL}/commit/{sha(n)}",
        "author": author,
        "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
        "added": added if added is not None else [f"file-{n}.txt"],
        "removed": removed or [],
        "modified": modified or [],
    }


def push(
    commits: list[dict[str, Any]],
    *,
    repo_id: int = REPO_ID,
    html_url: str = REPO_URL,
    full_name: str = "Codertocat/Hello-World",
    ref: str = "refs/heads/main",
    forced: bool = False,
    deleted: bool = False,
) -> bytes:
    payload = copy.deepcopy(_PUSH)
    payload.update(
        ref=ref,
        forced=forced,
        deleted=deleted,
        commits=commits,
        head_commit=commits[-1] if commits else None,
        after=commits[-1]["id"] if commits else "0" * 40,
    )
    payload["repository"].update(id=repo_id, html_url=html_url, full_name=full_name)
    return json.dumps(payload, ensure_ascii=False).encode()


def repository_event(
    action: str, *, repo_id: int = REPO_ID, full_name: str, html_url: str
) -> bytes:
    name = "renamed" if action == "renamed" else "transferred"
    payload = json.loads((FIXTURES / "repository" / f"{name}.payload.json").read_bytes())
    payload["action"] = action
    payload["repository"].update(id=repo_id, full_name=full_name, html_url=html_url)
    return json.dumps(payload).encode()
