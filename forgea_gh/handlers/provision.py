"""`provision_repo` jobs: create a session's repository from the lab template.

Creating repositories needs the GitHub client, which this daemon does not
have yet; until it does, the job fails permanently with that reason, so the
operator sees it on /status/dead-letters and can replay it later.
"""

from __future__ import annotations

from forgea_gh import errors, jobs


async def handle(claimed: jobs.ClaimedJob) -> str:
    session_id = (claimed.job.payload or {}).get("session_id")
    raise errors.PermanentError(
        f"cannot provision a repository for session {session_id}: this forgea-gh has no "
        "GitHub client yet; bind an existing repository with `forgea-gh sessions create "
        "--repo-id ... --repo-url ...` instead"
    )
