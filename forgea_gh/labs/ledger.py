"""From a push payload to ledger entries: pure, no I/O.

https://docs.github.com/en/webhooks/webhook-events-and-payloads#push
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from forgea_gh import errors
from forgea_gh.labs import model


def normalise_repo_url(url: str) -> str:
    """The form two URLs of one repository share: lower case, no trailing / or .git."""
    text = url.strip().lower()
    while text.endswith("/"):
        text = text[:-1]
    text = text.removesuffix(".git")
    while text.endswith("/"):
        text = text[:-1]
    return text


def repository_at(repo_id: int, html_url: str, full_name: str | None = None) -> model.Repository:
    """An existing GitHub repository to bind; `full_name` defaults to html_url's owner/name."""
    parts = urlsplit(html_url.strip())
    path = parts.path.strip("/").removesuffix(".git").split("/")
    if parts.scheme not in ("http", "https") or not parts.netloc or len(path) != 2 or "" in path:
        raise errors.ValidationError(
            "repository.html_url", "must be a repository URL like https://github.com/owner/name"
        )
    if repo_id <= 0:
        raise errors.ValidationError("repository.id", "must be a positive integer")
    return model.Repository(
        provider_repo_id=repo_id,
        full_name=full_name if full_name is not None else "/".join(path),
        html_url=html_url.strip(),
    )


def repository_of(payload: Mapping[str, Any]) -> model.Repository:
    repo = payload.get("repository")
    if not isinstance(repo, dict):
        raise errors.PermanentError("payload has no repository object")
    repo_id = repo.get("id")
    if not isinstance(repo_id, int) or isinstance(repo_id, bool):
        raise errors.PermanentError("repository.id is missing or not an integer")
    installation = payload.get("installation")
    installation_id = installation.get("id") if isinstance(installation, dict) else None
    return model.Repository(
        provider_repo_id=repo_id,
        full_name=_text(repo.get("full_name")) or "",
        html_url=_text(repo.get("html_url")) or "",
        installation_id=installation_id if isinstance(installation_id, int) else None,
    )


def parse_push(payload: Mapping[str, Any]) -> model.Push:
    """The ledger's view of a push; PermanentError if the payload cannot be one."""
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref:
        raise errors.PermanentError("push payload has no ref")
    raw_commits = payload.get("commits") or []
    if not isinstance(raw_commits, list):
        raise errors.PermanentError("push payload's commits is not a list")
    commits = [_commit(c, n) for n, c in enumerate(raw_commits)]
    head = payload.get("head_commit")
    head_sha = _text(head.get("id")) if isinstance(head, dict) else None
    if head_sha is None and commits:
        head_sha = commits[-1].sha
    repo = payload.get("repository")
    pushed_at = _timestamp(repo.get("pushed_at")) if isinstance(repo, dict) else None
    return model.Push(
        repository=repository_of(payload),
        ref=ref,
        branch=ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None,
        deleted=bool(payload.get("deleted")),
        forced=bool(payload.get("forced")),
        pushed_at=pushed_at,
        head_sha=head_sha,
        commits=commits,
    )


def _commit(raw: Any, index: int) -> model.Commit:
    if not isinstance(raw, dict):
        raise errors.PermanentError(f"commits[{index}] is not an object")
    sha = raw.get("id")
    if not isinstance(sha, str) or not sha:
        raise errors.PermanentError(f"commits[{index}] has no id")
    author = _object(raw.get("author"))
    committer = _object(raw.get("committer"))
    return model.Commit(
        sha=sha,
        message=_text(raw.get("message")) or "",
        author_name=_text(author.get("name")),
        author_email=_text(author.get("email")),
        author_login=_text(author.get("username")),  # absent for unknown authors
        committer_name=_text(committer.get("name")),
        committer_email=_text(committer.get("email")),
        committer_login=_text(committer.get("username")),
        added=_paths(raw.get("added")),
        modified=_paths(raw.get("modified")),
        removed=_paths(raw.get("removed")),
        timestamp=_text(raw.get("timestamp")),
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _paths(value: Any) -> list[str]:
    return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []


def _timestamp(value: Any) -> str | None:
    # Push payloads carry repository.pushed_at as Unix seconds; other events
    # as ISO-8601 text.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _text(value)
