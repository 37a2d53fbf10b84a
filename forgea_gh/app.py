"""The composition root: builds store, processor, scheduler and the web app.

Nothing else constructs these. The lifespan opens them in order and closes
them in reverse: store, then processor and scheduler, then the smee
forwarder (when `smee.url` is set); on the way out the forwarder stops
first, then the scheduler, in-flight jobs get a grace period, then the store
commits what the receiver handed it and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from forgea_gh import processor as processor_mod
from forgea_gh import retry, settings, smee, timeutil
from forgea_gh import scheduler as scheduler_mod
from forgea_gh import store as store_mod
from forgea_gh.github import client as github_client
from forgea_gh.handlers import registry
from forgea_gh.handlers import router as router_mod
from forgea_gh.labs import service
from forgea_gh.store import base
from forgea_gh.web import api, metrics, status
from forgea_gh.web import receiver as receiver_mod

log = logging.getLogger(__name__)


class Role(enum.StrEnum):
    RECEIVER = "receiver"  # accept and store deliveries; no processing
    WORKER = "worker"  # process the queue; no webhook route
    ALL = "all"


@dataclass
class Daemon:
    """What one process runs, for the lifespan (and tests) to reach."""

    config: settings.Settings
    role: Role
    store: base.Store
    processor: processor_mod.Processor | None
    receiver: receiver_mod.Receiver | None
    github: github_client.GitHubClient | None = None
    scheduler: AsyncIOScheduler | None = field(default=None)
    smee_forwarder: smee.Forwarder | None = None
    smee_task: asyncio.Task[None] | None = None

    def scheduler_running(self) -> bool:
        return self.scheduler is not None and self.scheduler.running


def policy_from(config: settings.Settings) -> retry.RetryPolicy:
    return retry.RetryPolicy(
        base_seconds=config.worker.backoff_base_seconds,
        max_seconds=config.worker.backoff_max_seconds,
        max_attempts=config.worker.max_attempts,
    )


def build(
    config: settings.Settings,
    *,
    role: Role = Role.ALL,
    router: router_mod.Router | None = None,
    clock: timeutil.Clock = timeutil.utcnow,
    github_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The daemon as an ASGI app. `github_transport` lets tests route GitHub calls."""
    store = store_mod.from_settings(config, receiving=role in (Role.RECEIVER, Role.ALL))
    github = github_client.from_settings(config, transport=github_transport)
    github_configured = github is not None
    # Without GitHub credentials no outbound job is ever created.
    reporting = service.Reporting(
        enabled=github_configured, max_attempts=config.worker.max_attempts
    )
    processor = None
    if role in (Role.WORKER, Role.ALL):
        processor = processor_mod.Processor(
            store,
            router
            or registry.default_router(
                reporting=reporting, github=github, store=store, config=config
            ),
            policy_from(config),
            concurrency=config.worker.concurrency,
            lease_seconds=config.worker.lease_seconds,
            clock=clock,
        )
    receiver = None
    if role in (Role.RECEIVER, Role.ALL):
        receiver = receiver_mod.Receiver(
            store,
            config.require_webhook_secrets(),
            max_body_bytes=config.webhook.max_body_bytes,
            accept_reserialized=config.webhook.accept_reserialized,
            on_stored=processor.wake if processor else (lambda: None),
            clock=clock,
        )
    daemon = Daemon(config, role, store, processor, receiver, github)
    if config.smee.url and receiver is not None:
        # Forwarded over HTTP like any delivery, so it takes the same path.
        daemon.smee_forwarder = smee.Forwarder(config.smee.url, config.smee_target())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            if processor is not None:
                processor.start()
                daemon.scheduler = scheduler_mod.build(config, processor, store, github)
                daemon.scheduler.start()
                processor.wake()  # whatever is due from before the start
            if daemon.smee_forwarder is not None:
                daemon.smee_task = asyncio.create_task(daemon.smee_forwarder.run(), name="smee")
            log.info("forgea-gh %s role ready (%s backend)", role.value, store.backend)
            yield
        finally:
            if daemon.smee_task is not None:
                daemon.smee_task.cancel()
                # It never ends on its own; whatever it ended with, go on closing.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await daemon.smee_task
            if daemon.scheduler is not None and daemon.scheduler.running:
                daemon.scheduler.shutdown(wait=False)
            if processor is not None:
                await processor.stop(config.server.shutdown_grace_seconds)
            await store.close()
            if github is not None:
                await github.aclose()
            log.info("forgea-gh stopped")

    routes: list[Route] = status.routes(
        store,
        token=config.status_token(),
        scheduler_running=daemon.scheduler_running if processor is not None else None,
        github_reporting=reporting.enabled,
        clock=clock,
    )
    routes += metrics.routes(
        store,
        token=config.status_token(),
        answers=receiver.answers if receiver is not None else Counter(),
        clock=clock,
    )
    routes += api.routes(
        store,
        token=config.api_token(),
        max_attempts=config.worker.max_attempts,
        reporting=reporting,
        can_provision=github_configured,
    )
    if receiver is not None:
        routes.append(Route(WEBHOOK_PATH, receiver, methods=["POST"]))
    app = DaemonApp(routes=routes, lifespan=lifespan)
    app.receiver = receiver
    app.state.daemon = daemon
    return app


WEBHOOK_PATH = "/webhooks/github"


class DaemonApp(Starlette):
    """Starlette, with webhook POSTs sent straight to the receiver.

    The receiver answers every outcome itself, so the error and routing
    middleware in between would only cost time on the hottest path; every
    other request (and a GET on the webhook path: 405) goes through Starlette.
    """

    receiver: receiver_mod.Receiver | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.receiver is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == WEBHOOK_PATH
        ):
            await self.receiver(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
