"""The daemon's routing table: which handler does which event and job kind."""

from __future__ import annotations

from forgea_gh.handlers import ping, provision, push, repository, router
from forgea_gh.labs import service


def default_router() -> router.Router:
    table = router.Router()
    table.on_event("ping", ping.handle)
    table.on_event_in_tx("push", push.handle)
    table.on_event_in_tx("repository", repository.renamed_or_transferred, action="renamed")
    table.on_event_in_tx("repository", repository.renamed_or_transferred, action="transferred")
    table.on_event_in_tx("repository", repository.deleted, action="deleted")
    table.on_event_in_tx(
        "installation_repositories", repository.installation_removed, action="removed"
    )
    table.on_kind(service.PROVISION_REPO, provision.handle)
    return table
