"""`provision_repo` jobs: create a learner's repository from the lab's template.

https://docs.github.com/en/rest/repos/repos#create-a-repository-using-a-template

Every step is safe to repeat. The repository's name is deterministic (lab,
user, session) and its description carries the session's marker, so before
generating, a retry looks the name up and adopts a repository that carries
the marker: a timeout whose request in fact succeeded never makes a second
repository. Success binds the repository by id and moves the session
PROVISIONING → ACTIVE. A permanent failure, or a failure on the last
attempt, deletes the repository if one was made and moves the session to
PROVISIONING_FAILED. Every step is audited.
"""

from __future__ import annotations

import re
from typing import Any

from forgea_gh import errors, jobs
from forgea_gh.github import client as client_mod
from forgea_gh.handlers import router
from forgea_gh.labs import lifecycle, model, service
from forgea_gh.store import base

ACTOR = "provisioner"


def repository_name(session: model.Session) -> str:
    """`<lab>-<login>-<session id>`, as GitHub allows names (at most 100 characters)."""
    raw = f"{session.lab_slug}-{session.user_login}-{session.id}".lower()
    return re.sub(r"[^a-z0-9._-]", "-", raw)[-100:]


def marker(session: model.Session) -> str:
    return f"[forgea-session:{session.id}]"


def handler(github: client_mod.GitHubClient, store: base.Store, owner: str) -> router.Handler:
    async def handle(claimed: jobs.ClaimedJob) -> str:
        session_id = (claimed.job.payload or {}).get("session_id")
        if not isinstance(session_id, int):
            raise errors.PermanentError(f"malformed provision_repo payload: {claimed.job.payload}")

        async def load(tx: base.LabTx) -> tuple[model.Session | None, model.Lab | None]:
            session = await tx.session(session_id)
            return session, await tx.lab(session.lab_slug) if session else None

        session, lab = await store.read(load)
        if session is None or lab is None:
            raise errors.PermanentError(f"no session {session_id} to provision")
        if session.status != lifecycle.Status.PROVISIONING:
            return f"ignored: session {session.id} is {session.status}"
        full_name = f"{owner}/{repository_name(session)}"
        last_attempt = claimed.job.attempts >= claimed.job.max_attempts
        try:
            if not owner:
                raise errors.PermanentError("github.owner is not set: nobody owns new repositories")
            repo = await _create_or_adopt(github, store, session, lab, owner, full_name)
            await github.add_collaborator(full_name, session.user_login)
            await _audit(
                store,
                session,
                "provision.collaborator_added",
                {"repository": full_name, "login": session.user_login},
            )
        except (errors.PermanentError, errors.RetryableError) as exc:
            if isinstance(exc, errors.PermanentError) or last_attempt:
                await _roll_back(github, store, session, full_name, exc)
                raise errors.PermanentError(f"provisioning {full_name} failed: {exc}") from exc
            await _audit(
                store,
                session,
                "provision.attempt_failed",
                {"repository": full_name, "attempt": claimed.job.attempts, "error": str(exc)},
            )
            raise
        bound = model.Repository(
            repo["id"], repo.get("full_name") or full_name, repo.get("html_url") or "", None
        )

        async def activate(tx: base.LabTx) -> None:
            current = await service.require_session(tx, session.id)
            await tx.bind_repository(current.id, bound)
            await service.transition(
                tx,
                current,
                lifecycle.Status.ACTIVE,
                actor=ACTOR,
                reason=f"repository {bound.full_name} provisioned",
            )

        await store.transaction(activate)
        return f"handled: provisioned {bound.full_name} (id {bound.provider_repo_id})"

    return handle


async def _create_or_adopt(
    github: client_mod.GitHubClient,
    store: base.Store,
    session: model.Session,
    lab: model.Lab,
    owner: str,
    full_name: str,
) -> dict[str, Any]:
    existing = await github.get_repository(full_name)
    if existing is not None:
        if marker(session) not in str(existing.get("description") or ""):
            raise errors.PermanentError(
                f"{full_name} exists and is not this session's repository (no "
                f"{marker(session)} in its description)"
            )
        await _audit(
            store,
            session,
            "provision.adopted",
            {"repository": full_name, "repository_id": existing.get("id")},
        )
        return existing
    await _audit(
        store,
        session,
        "provision.generating",
        {"repository": full_name, "template": lab.template_repository},
    )
    try:
        created = await github.generate_repository(
            lab.template_repository,
            owner=owner,
            name=full_name.split("/", 1)[1],
            description=f"{lab.title} for {session.user_login} {marker(session)}",
            private=True,
        )
    except client_mod.RejectedError as exc:
        # A retried POST whose first answer was lost: GitHub made the
        # repository, then refused the retry ("name already exists").
        again = await github.get_repository(full_name) if exc.status_code == 422 else None
        if again is None or marker(session) not in str(again.get("description") or ""):
            raise
        created = again
    await _audit(
        store,
        session,
        "provision.generated",
        {"repository": full_name, "repository_id": created.get("id")},
    )
    return created


async def _roll_back(
    github: client_mod.GitHubClient,
    store: base.Store,
    session: model.Session,
    full_name: str,
    cause: Exception,
) -> None:
    """Delete what this session's provisioning made, then mark it PROVISIONING_FAILED."""
    deleted = False
    try:
        existing = await github.get_repository(full_name)
        if existing is not None and marker(session) in str(existing.get("description") or ""):
            deleted = await github.delete_repository(full_name)
    except errors.ForgeaError as exc:
        # The session still fails; the operator finds the leftover in the audit log.
        await _audit(
            store,
            session,
            "provision.rollback_failed",
            {"repository": full_name, "error": str(exc)},
        )

    async def fail(tx: base.LabTx) -> None:
        current = await service.require_session(tx, session.id)
        if lifecycle.allowed(current.status, lifecycle.Status.PROVISIONING_FAILED):
            await service.transition(
                tx,
                current,
                lifecycle.Status.PROVISIONING_FAILED,
                actor=ACTOR,
                reason=str(cause)[:500],
            )
        await tx.audit(
            "provision.failed",
            actor=ACTOR,
            subject=("lab_session", session.id),
            detail={
                "repository": full_name,
                "error": str(cause)[:500],
                "repository_deleted": deleted,
            },
        )

    await store.transaction(fail)


async def _audit(
    store: base.Store, session: model.Session, action: str, detail: dict[str, Any]
) -> None:
    async def write(tx: base.LabTx) -> None:
        await tx.audit(action, actor=ACTOR, subject=("lab_session", session.id), detail=detail)

    await store.transaction(write)
