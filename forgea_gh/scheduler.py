"""APScheduler wiring only: interval jobs that call processor and maintenance functions.

The tick functions themselves live elsewhere and are tested by calling them
directly; this module only says how often each runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from forgea_gh import processor as processor_mod
from forgea_gh import settings, timeutil
from forgea_gh.github import client as client_mod
from forgea_gh.github import redelivery
from forgea_gh.labs import service
from forgea_gh.store import base

log = logging.getLogger(__name__)

RETENTION_INTERVAL = timedelta(hours=1)
EXPIRY_INTERVAL = timedelta(hours=1)


def build(
    config: settings.Settings,
    processor: processor_mod.Processor,
    store: base.Store,
    github: client_mod.GitHubClient | None = None,
) -> AsyncIOScheduler:
    """A scheduler (not started: start it inside the running loop)."""
    scheduler = AsyncIOScheduler(timezone="UTC")
    _every(
        scheduler, "tick", processor.tick, timedelta(seconds=config.worker.poll_interval_seconds)
    )
    if config.retention.completed_days > 0:
        keep = timedelta(days=config.retention.completed_days)

        async def prune() -> None:
            await prune_completed(store, keep)

        _every(scheduler, "retention", prune, RETENTION_INTERVAL)
    if config.labs.session_ttl_days > 0:
        ttl = timedelta(days=config.labs.session_ttl_days)

        async def expire() -> None:
            await expire_sessions(store, ttl)

        _every(scheduler, "session-expiry", expire, EXPIRY_INTERVAL)
    if github is not None and config.redelivery.enabled():
        hooks = redelivery.hooks_from(config.redelivery.hooks, config.redelivery.app)

        async def reconcile() -> None:
            report = await redelivery.reconcile(github, store, hooks)
            if report.requested or report.errors:
                log.info(
                    "redelivery: asked for %d failed deliveries; %d error(s)",
                    len(report.requested),
                    len(report.errors),
                )

        _every(
            scheduler,
            "redelivery",
            reconcile,
            timedelta(minutes=config.redelivery.interval_minutes),
        )
    return scheduler


async def expire_sessions(store: base.Store, ttl: timedelta) -> list[int]:
    idle_since = timeutil.to_text(timeutil.utcnow() - ttl)
    expired = await store.transaction(
        lambda tx: service.expire_idle(tx, idle_since, actor="scheduler:expiry")
    )
    if expired:
        log.info("expired %d idle session(s): %s", len(expired), expired)
    return expired


async def prune_completed(store: base.Store, keep: timedelta) -> base.PruneResult:
    result = await store.prune_completed(timeutil.utcnow() - keep)
    if result.jobs or result.deliveries:
        log.info(
            "retention: pruned %d completed job(s) and %d deliveries",
            result.jobs,
            result.deliveries,
        )
    return result


def _every(
    scheduler: AsyncIOScheduler,
    name: str,
    func: Callable[[], Awaitable[object]],
    interval: timedelta,
) -> None:
    scheduler.add_job(
        func,
        "interval",
        seconds=interval.total_seconds(),
        id=name,
        name=name,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )
