"""`commit_status` jobs: report a verification state on the learner's commit.

https://docs.github.com/en/rest/commits/statuses#create-a-commit-status

One job per (session, sha, state), so a state is posted once in effect.
The job completes only after GitHub's 2xx; failures retry with backoff.
The one unavoidable duplicate: a crash between GitHub's 2xx and our commit
re-posts the same state for the same commit on restart, which GitHub shows
as the same status (the latest per context wins), so it is harmless.
"""

from __future__ import annotations

from forgea_gh import errors, jobs
from forgea_gh.github import client as client_mod
from forgea_gh.handlers import router
from forgea_gh.labs import model
from forgea_gh.store import base


def handler(github: client_mod.GitHubClient, store: base.Store, context: str) -> router.Handler:
    async def handle(claimed: jobs.ClaimedJob) -> str:
        payload = claimed.job.payload or {}
        session_id, sha, state = payload.get("session_id"), payload.get("sha"), payload.get("state")
        if (
            not isinstance(session_id, int)
            or not isinstance(sha, str)
            or state not in ("pending", "success", "failure", "error")
        ):
            raise errors.PermanentError(f"malformed commit_status payload: {payload}")

        async def find(tx: base.LabTx) -> model.Session | None:
            return await tx.session(session_id)

        session = await store.read(find)
        if session is None or session.repository is None:
            raise errors.PermanentError(f"session {session_id} has no repository to report on")
        repo = session.repository
        await github.create_commit_status(
            repo.full_name,
            sha,
            state=state,
            context=context,
            description=str(payload.get("description") or ""),
            target_url=payload.get("target_url") or None,
            installation_id=repo.installation_id,
        )
        return f"handled: {state} on {repo.full_name}@{sha[:12]}"

    return handle
