"""`repository` and `installation_repositories`: keep bindings true to GitHub.

https://docs.github.com/en/webhooks/webhook-events-and-payloads#repository
https://docs.github.com/en/webhooks/webhook-events-and-payloads#installation_repositories
"""

from __future__ import annotations

from typing import Any

from forgea_gh import errors, jobs
from forgea_gh.labs import ledger, lifecycle, service
from forgea_gh.store import base

ACTOR = "github:repository"


def _payload(claimed: jobs.ClaimedJob) -> dict[str, Any]:
    assert claimed.delivery is not None
    try:
        return claimed.delivery.payload()
    except errors.BadDeliveryError as exc:
        raise errors.PermanentError(f"payload unreadable: {exc}") from exc


async def renamed_or_transferred(claimed: jobs.ClaimedJob, tx: base.LabTx) -> str:
    """The id stays; the names (and maybe the installation) follow GitHub's."""
    assert claimed.delivery is not None
    repo = ledger.repository_of(_payload(claimed))
    before = await tx.session_by_repository(repo.provider_repo_id)
    if before is None or not await tx.rename_repository(repo):
        return f"ignored: repository {repo.provider_repo_id} is not bound to a lab session"
    old = before.repository
    await tx.audit(
        f"repository.{claimed.delivery.action}",
        actor=ACTOR,
        subject=("lab_session", before.id),
        guid=claimed.delivery.guid,
        detail={
            "repository_id": repo.provider_repo_id,
            "from": old.full_name if old else None,
            "to": repo.full_name,
        },
    )
    return f"handled: repository {repo.provider_repo_id} is now {repo.full_name}"


async def deleted(claimed: jobs.ClaimedJob, tx: base.LabTx) -> str:
    """A deleted repository ends its session's work: abandoned, when the lifecycle allows."""
    assert claimed.delivery is not None
    repo = ledger.repository_of(_payload(claimed))
    session = await tx.session_by_repository(repo.provider_repo_id)
    if session is None:
        return f"ignored: repository {repo.provider_repo_id} is not bound to a lab session"
    guid = claimed.delivery.guid
    await tx.audit(
        "repository.deleted",
        actor=ACTOR,
        subject=("lab_session", session.id),
        guid=guid,
        detail={"repository_id": repo.provider_repo_id, "full_name": repo.full_name},
    )
    if lifecycle.allowed(session.status, lifecycle.Status.ABANDONED):
        moved = await service.transition(
            tx,
            session,
            lifecycle.Status.ABANDONED,
            actor=ACTOR,
            reason="repository deleted",
            guid=guid,
        )
        return f"handled: session {session.id} {moved.status}"
    return f"handled: session {session.id} stays {session.status}"


async def installation_removed(claimed: jobs.ClaimedJob, tx: base.LabTx) -> str:
    """Repositories taken out of the App's installation: audited for the operator."""
    assert claimed.delivery is not None
    payload = _payload(claimed)
    removed = payload.get("repositories_removed") or []
    bound = 0
    for entry in removed if isinstance(removed, list) else []:
        repo_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(repo_id, int):
            continue
        session = await tx.session_by_repository(repo_id)
        bound += session is not None
        await tx.audit(
            "installation.repository_removed",
            actor=ACTOR,
            subject=("lab_session", session.id) if session else ("repository", repo_id),
            guid=claimed.delivery.guid,
            detail={
                "repository_id": repo_id,
                "full_name": entry.get("full_name"),
                "installation_id": claimed.delivery.installation_id,
            },
        )
    return f"handled: {len(removed)} repositories removed from the installation, {bound} bound"
