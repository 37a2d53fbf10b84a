"""The daemon's routing table: which handler does which event and job kind."""

from __future__ import annotations

from forgea_gh.handlers import ping, router


def default_router() -> router.Router:
    table = router.Router()
    table.on_event("ping", ping.handle)
    return table
