"""Durable state: the `Store` protocol and its backends."""

from __future__ import annotations

from forgea_gh import settings
from forgea_gh.store import base, sqlite


def from_settings(config: settings.Settings, *, receiving: bool = False) -> base.Store:
    """The store `database.url` names (not yet opened).

    `receiving`: for a daemon that receives webhooks, whose
    `worker.max_attempts` becomes the budget of the webhook jobs it stores.
    """
    return sqlite.SqliteStore(
        config.database.sqlite_path,
        synchronous=config.database.synchronous,
        busy_timeout_ms=config.database.busy_timeout_ms,
        max_attempts=config.worker.max_attempts if receiving else None,
    )
