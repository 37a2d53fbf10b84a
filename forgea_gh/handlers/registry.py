"""The daemon's routing table: which handler does which event and job kind."""

from __future__ import annotations

from forgea_gh import errors, jobs, settings
from forgea_gh.github import client as client_mod
from forgea_gh.handlers import commit_status, ping, provision, push, repository, router
from forgea_gh.labs import service
from forgea_gh.store import base


def default_router(
    *,
    reporting: service.Reporting = service.NO_REPORTING,
    github: client_mod.GitHubClient | None = None,
    store: base.Store | None = None,
    config: settings.Settings | None = None,
) -> router.Router:
    table = router.Router()
    table.on_event("ping", ping.handle)
    table.on_event_in_tx("push", push.handler(reporting))
    table.on_event_in_tx("repository", repository.renamed_or_transferred, action="renamed")
    table.on_event_in_tx("repository", repository.renamed_or_transferred, action="transferred")
    table.on_event_in_tx("repository", repository.deleted, action="deleted")
    table.on_event_in_tx(
        "installation_repositories", repository.installation_removed, action="removed"
    )
    if github is not None and store is not None and config is not None:
        table.on_kind(
            service.COMMIT_STATUS,
            commit_status.handler(github, store, config.github.status_context),
        )
        table.on_kind(service.PROVISION_REPO, provision.handler(github, store, config.github.owner))
    else:
        table.on_kind(service.COMMIT_STATUS, _needs_github)
        table.on_kind(service.PROVISION_REPO, _needs_github)
    return table


async def _needs_github(claimed: jobs.ClaimedJob) -> str:
    # Queued while credentials were configured, run after they were removed.
    raise errors.PermanentError(
        f"{claimed.job.kind} needs GitHub credentials (github.token, or github.app_id and "
        "github.private_key_file); configure them, then replay this job"
    )
