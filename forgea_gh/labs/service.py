"""Lab operations, each inside a caller's transaction (`LabTx`).

The admin API, the CLI and the webhook handlers all call these, so a rule
lives in one place. Every state change writes its audit row in the same
transaction as the change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from forgea_gh import errors
from forgea_gh.labs import ledger, lifecycle, model
from forgea_gh.store import base

PROVISION_REPO = "provision_repo"
COMMIT_STATUS = "commit_status"

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_REPO_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
# A full commit id: SHA-1 (40) or, in SHA-256 repositories, 64 hex digits.
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# Commit status state for each verification outcome.
# https://docs.github.com/en/rest/commits/statuses#create-a-commit-status
STATES = {"requested": "pending", "passed": "success", "failed": "failure", "error": "error"}
DESCRIPTIONS = {
    "pending": "Forgea is verifying this commit",
    "success": "Lab verification passed",
    "failure": "Lab verification failed",
    "error": "Lab verification could not run",
}
OUTCOMES = {
    "passed": lifecycle.Status.COMPLETED,
    "failed": lifecycle.Status.ACTIVE,
    "error": lifecycle.Status.ACTIVE,
}


@dataclass(frozen=True, slots=True)
class Reporting:
    """Whether verification states go back to GitHub as commit statuses.

    Off when no GitHub credentials are configured: then no outbound job is
    ever created, rather than jobs that could only fail.
    """

    enabled: bool = False
    max_attempts: int = 8


NO_REPORTING = Reporting()


async def report(
    tx: base.LabTx,
    reporting: Reporting,
    session: model.Session,
    sha: str,
    outcome: str,
    *,
    summary: str | None = None,
    details_url: str | None = None,
) -> int | None:
    """Queue a commit status job for a verification outcome (once per session, sha, state)."""
    if not reporting.enabled or session.repository is None:
        return None
    state = STATES[outcome]
    return await tx.enqueue_job(
        COMMIT_STATUS,
        f"{COMMIT_STATUS}:{session.id}:{sha}:{state}",
        {
            "session_id": session.id,
            "sha": sha,
            "state": state,
            "description": (summary or DESCRIPTIONS[state])[:140],
            "target_url": details_url,
        },
        reporting.max_attempts,
    )


async def transition(
    tx: base.LabTx,
    session: model.Session,
    target: lifecycle.Status,
    *,
    actor: str,
    reason: str,
    guid: str | None = None,
) -> model.Session:
    """Move a session (rule checked first, row version bumped, audited)."""
    lifecycle.check(session.status, target)
    moved = await tx.set_status(session, target)
    await tx.audit(
        "session.transition",
        actor=actor,
        subject=("lab_session", session.id),
        guid=guid,
        detail={"from": session.status.value, "to": target.value, "reason": reason},
    )
    return moved


async def create_lab(
    tx: base.LabTx, slug: str, title: str, template_repository: str, *, actor: str
) -> model.Lab:
    if not _SLUG.fullmatch(slug):
        raise errors.ValidationError("slug", "use 1-64 lower-case letters, digits and dashes")
    if not title.strip():
        raise errors.ValidationError("title", "must not be empty")
    if not _REPO_NAME.fullmatch(template_repository):
        raise errors.ValidationError("template_repository", "must be owner/name")
    if await tx.lab(slug) is not None:
        raise errors.ConflictError(f"lab {slug!r} exists already")
    lab = await tx.create_lab(slug, title.strip(), template_repository)
    await tx.audit("lab.created", actor=actor, subject=("lab", lab.id), detail=lab.to_json())
    return lab


async def add_version(
    tx: base.LabTx, slug: str, version: str, template_ref: str, *, actor: str
) -> tuple[model.Lab, model.LabVersion]:
    lab = await require_lab(tx, slug)
    version, template_ref = version.strip(), template_ref.strip()
    if not version or len(version) > 64:
        raise errors.ValidationError("version", "must be 1-64 characters")
    if not template_ref:
        raise errors.ValidationError("template_ref", "must not be empty")
    if await tx.lab_version(lab.id, version) is not None:
        raise errors.ConflictError(f"lab {slug!r} has a version {version!r} already")
    created = await tx.create_lab_version(lab.id, version, template_ref)
    await tx.audit(
        "lab.version_added", actor=actor, subject=("lab", lab.id), detail=created.to_json(slug)
    )
    return lab, created


async def require_lab(tx: base.LabTx, slug: str) -> model.Lab:
    lab = await tx.lab(slug)
    if lab is None:
        raise errors.NotFoundError(f"no lab {slug!r}")
    return lab


async def require_session(tx: base.LabTx, session_id: int) -> model.Session:
    session = await tx.session(session_id)
    if session is None:
        raise errors.NotFoundError(f"no session {session_id}")
    return session


@dataclass(frozen=True, slots=True)
class NewSession:
    lab: str
    login: str
    version: str | None = None
    github_id: int | None = None
    repository: model.Repository | None = None
    # A repository known only by URL: the session starts ACTIVE and binds to
    # the repository's id on its first push.
    user_fork_url: str | None = None


async def start_session(
    tx: base.LabTx,
    request: NewSession,
    *,
    actor: str,
    max_attempts: int,
    can_provision: bool = True,
) -> model.Session:
    """A session bound to an existing repository (ACTIVE), or one to provision (PROVISIONING).

    Provisioning needs GitHub: without credentials (`can_provision` False) a
    session without a repository is refused with UnavailableError.
    """
    lab = await require_lab(tx, request.lab)
    version = await tx.lab_version(lab.id, request.version)
    if version is None:
        if request.version is None:
            raise errors.ConflictError(f"lab {lab.slug!r} has no version yet: add one first")
        raise errors.ValidationError(
            "version", f"lab {lab.slug!r} has no version {request.version!r}"
        )
    if not request.login.strip():
        raise errors.ValidationError("user.login", "must not be empty")
    if request.repository is None and not request.user_fork_url and not can_provision:
        raise errors.UnavailableError(
            "repository provisioning needs GitHub credentials (github.token, or github.app_id "
            "and github.private_key_file); or bind an existing repository"
        )
    user_id, _, _ = await tx.user(request.login.strip(), request.github_id)
    repo = request.repository
    if repo is not None:
        bound = await tx.session_by_repository(repo.provider_repo_id)
        if bound is not None:
            raise errors.ConflictError(
                f"repository {repo.provider_repo_id} is bound to session {bound.id} already"
            )
        session = await tx.create_session(
            user_id, version, lifecycle.Status.ACTIVE, ledger.normalise_repo_url(repo.html_url)
        )
        await tx.bind_repository(session.id, repo)
    elif request.user_fork_url:
        session = await tx.create_session(
            user_id,
            version,
            lifecycle.Status.ACTIVE,
            ledger.normalise_repo_url(request.user_fork_url),
        )
    else:
        session = await tx.create_session(user_id, version, lifecycle.Status.PROVISIONING, None)
        await tx.enqueue_job(
            PROVISION_REPO,
            f"{PROVISION_REPO}:{session.id}",
            {"session_id": session.id},
            max_attempts,
        )
    created = await require_session(tx, session.id)
    await tx.audit(
        "session.created",
        actor=actor,
        subject=("lab_session", created.id),
        detail={
            "status": created.status.value,
            "lab": lab.slug,
            "version": version.version,
            "user": created.user_login,
            "repository_id": repo.provider_repo_id if repo else None,
        },
    )
    return created


@dataclass(frozen=True, slots=True)
class Result:
    session_id: int
    outcome: str
    commit_sha: str
    summary: str | None = None
    details_url: str | None = None


async def record_result(
    tx: base.LabTx,
    result: Result,
    idempotency_key: str,
    *,
    actor: str,
    reporting: Reporting = NO_REPORTING,
) -> tuple[model.Verification, model.Session]:
    """Append a verification result and move the session (VERIFYING → COMPLETED or ACTIVE)."""
    if result.outcome not in OUTCOMES:
        raise errors.ValidationError("outcome", "must be passed, failed or error")
    sha = result.commit_sha.lower()
    if not _SHA.fullmatch(sha):
        raise errors.ValidationError("commit_sha", "must be a full 40-hex-digit commit id")
    if result.summary is not None and len(result.summary) > 4000:
        raise errors.ValidationError("summary", "must be at most 4000 characters")
    session = await require_session(tx, result.session_id)
    target = OUTCOMES[result.outcome]
    if session.status != lifecycle.Status.VERIFYING:
        raise lifecycle.IllegalTransition(
            f"session {session.id} is {session.status}: a verification result needs a "
            "VERIFYING session"
        )
    if await tx.attempt_id(session.id, sha) is None:
        raise errors.ValidationError(
            "commit_sha", f"no commit {sha} in session {session.id}'s ledger"
        )
    verification = await tx.add_verification(
        session.id, result.outcome, sha, result.summary, result.details_url, idempotency_key
    )
    if verification is None:
        raise errors.ConflictError(f"verification key {idempotency_key!r} was used before")
    moved = await transition(
        tx, session, target, actor=actor, reason=f"verification {result.outcome} for {sha}"
    )
    await report(
        tx,
        reporting,
        moved,
        sha,
        result.outcome,
        summary=result.summary,
        details_url=result.details_url,
    )
    return verification, moved


async def abandon(tx: base.LabTx, session_id: int, *, actor: str) -> model.Session:
    session = await require_session(tx, session_id)
    if session.status == lifecycle.Status.ABANDONED:
        return session
    return await transition(
        tx, session, lifecycle.Status.ABANDONED, actor=actor, reason="abandoned by request"
    )


async def expire_idle(tx: base.LabTx, idle_since: str, *, actor: str) -> list[int]:
    """Move ACTIVE and VERIFYING sessions idle since before `idle_since` to EXPIRED."""
    expired = []
    for session in await tx.idle_sessions(
        [lifecycle.Status.ACTIVE.value, lifecycle.Status.VERIFYING.value], idle_since
    ):
        await transition(
            tx,
            session,
            lifecycle.Status.EXPIRED,
            actor=actor,
            reason=f"no activity since {session.last_activity_at}",
        )
        expired.append(session.id)
    return expired
