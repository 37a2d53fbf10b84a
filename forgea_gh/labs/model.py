"""The lab domain's records, as the store hands them out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forgea_gh.labs import lifecycle


@dataclass(frozen=True, slots=True)
class Lab:
    id: int
    slug: str
    title: str
    template_repository: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "slug": self.slug,
            "title": self.title,
            "template_repository": self.template_repository,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class LabVersion:
    id: int
    lab_id: int
    version: str
    template_ref: str
    created_at: str

    def to_json(self, lab_slug: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "lab": lab_slug,
            "version": self.version,
            "template_ref": self.template_ref,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Repository:
    """A GitHub repository as a mapping row knows it."""

    provider_repo_id: int
    full_name: str
    html_url: str
    installation_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.provider_repo_id,
            "full_name": self.full_name,
            "html_url": self.html_url,
            "installation_id": self.installation_id,
        }


@dataclass(frozen=True, slots=True)
class Session:
    id: int
    status: lifecycle.Status
    version: int  # row version, for optimistic concurrency
    user_id: int
    user_login: str
    user_github_id: int | None
    lab_id: int
    lab_slug: str
    lab_version_id: int
    lab_version: str
    user_fork_url: str | None
    preview_url: str | None
    started_at: str
    last_activity_at: str
    completed_at: str | None
    repository: Repository | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "lab": self.lab_slug,
            "version": self.lab_version,
            "user": {
                "id": self.user_id,
                "login": self.user_login,
                "github_id": self.user_github_id,
            },
            "repository": self.repository.to_json() if self.repository else None,
            "user_fork_url": self.user_fork_url,
            "preview_url": self.preview_url,
            "started_at": self.started_at,
            "last_activity_at": self.last_activity_at,
            "completed_at": self.completed_at,
            "row_version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Commit:
    """One ledger entry: a commit of a push, as lab_attempts records it."""

    sha: str
    message: str
    author_name: str | None
    author_email: str | None
    author_login: str | None
    committer_name: str | None
    committer_email: str | None
    committer_login: str | None
    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    timestamp: str | None = None


@dataclass(frozen=True, slots=True)
class Push:
    """What a push delivery says, reduced to what the ledger needs."""

    repository: Repository
    ref: str
    branch: str | None  # None for tags and other non-branch refs
    deleted: bool
    forced: bool
    pushed_at: str | None
    head_sha: str | None
    commits: list[Commit]

    @property
    def is_tag(self) -> bool:
        return self.ref.startswith("refs/tags/")


@dataclass(frozen=True, slots=True)
class Verification:
    id: int
    lab_session_id: int
    outcome: str
    commit_sha: str | None
    lab_attempt_id: int | None
    summary: str | None
    details_url: str | None
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.lab_session_id,
            "outcome": self.outcome,
            "commit_sha": self.commit_sha,
            "lab_attempt_id": self.lab_attempt_id,
            "summary": self.summary,
            "details_url": self.details_url,
            "created_at": self.created_at,
        }
