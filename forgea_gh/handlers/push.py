"""`push`: the ledger and the lifecycle.

https://docs.github.com/en/webhooks/webhook-events-and-payloads#push

Runs inside the transaction that completes the job: ledger rows, the
verification request, the session's move and the audit rows commit
together with `completed`, so a crash or a replay never half-records a push.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from forgea_gh import errors, jobs
from forgea_gh.labs import ledger, lifecycle, model, service
from forgea_gh.store import base

ACTOR = "github:push"


def handler(
    reporting: service.Reporting,
) -> Callable[[jobs.ClaimedJob, base.LabTx], Awaitable[str]]:
    """The push handler; with reporting on, a new verification request posts `pending`."""

    async def handle_push(claimed: jobs.ClaimedJob, tx: base.LabTx) -> str:
        return await handle(claimed, tx, reporting)

    return handle_push


async def handle(
    claimed: jobs.ClaimedJob, tx: base.LabTx, reporting: service.Reporting = service.NO_REPORTING
) -> str:
    delivery = claimed.delivery
    assert delivery is not None
    try:
        push = ledger.parse_push(delivery.payload())
    except errors.BadDeliveryError as exc:
        raise errors.PermanentError(f"push payload unreadable: {exc}") from exc
    repo = push.repository
    guid = delivery.guid

    session = await bind(tx, repo, guid)
    if session is None:
        await tx.audit(
            "push.unbound",
            actor=ACTOR,
            subject=("repository", repo.provider_repo_id),
            guid=guid,
            detail={"full_name": repo.full_name, "ref": push.ref},
        )
        return f"ignored: repository {repo.provider_repo_id} is not bound to a lab session"
    subject = ("lab_session", session.id)
    if push.deleted or push.is_tag or push.branch is None:
        what = "deleted" if push.deleted else "not a branch"
        await tx.audit(
            "push.not_recorded",
            actor=ACTOR,
            subject=subject,
            guid=guid,
            detail={"ref": push.ref, "reason": what},
        )
        return f"ignored: {push.ref} ({what})"

    new = await tx.record_commits(session.id, push, guid)
    await tx.audit(
        "push.recorded",
        actor=ACTOR,
        subject=subject,
        guid=guid,
        detail={
            "ref": push.ref,
            "commits": len(push.commits),
            "new": new,
            "forced": push.forced,
            "head": push.head_sha,
        },
    )
    recorded = f"{new} new of {len(push.commits)} commit(s) on {push.branch}"
    if session.status not in lifecycle.ACCEPTS_WORK or not push.commits or not push.head_sha:
        # The ledger records what happened; a finished session does not move.
        return f"handled: {recorded}; session {session.id} stays {session.status}"
    requested = await tx.add_verification(
        session.id, "requested", push.head_sha, None, None, f"push:{session.id}:{push.head_sha}"
    )
    if requested is not None:
        session = await service.transition(
            tx,
            session,
            lifecycle.Status.VERIFYING,
            actor=ACTOR,
            reason=f"push of {push.head_sha}",
            guid=guid,
        )
        await service.report(tx, reporting, session, push.head_sha, "requested")
    return f"handled: {recorded}; session {session.id} {session.status}"


async def bind(tx: base.LabTx, repo: model.Repository, guid: str) -> model.Session | None:
    """The session of a repository: by id, or backfilled once from its fork URL."""
    session = await tx.session_by_repository(repo.provider_repo_id)
    if session is not None or not repo.html_url:
        return session
    session = await tx.unbound_session_by_fork_url(ledger.normalise_repo_url(repo.html_url))
    if session is None:
        return None
    await tx.bind_repository(session.id, repo)
    await tx.audit(
        "repository.bound",
        actor=ACTOR,
        subject=("lab_session", session.id),
        guid=guid,
        detail={
            "repository_id": repo.provider_repo_id,
            "full_name": repo.full_name,
            "by": "user_fork_url",
        },
    )
    return await tx.session_by_repository(repo.provider_repo_id)
