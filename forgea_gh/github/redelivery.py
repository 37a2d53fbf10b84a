"""The redelivery reconciler: recover webhooks GitHub failed to deliver.

GitHub never retries a failed delivery by itself; it keeps each hook's
deliveries for 3 days and redelivers one (same GUID) when asked. For every
configured hook the reconciler lists the deliveries inside the window,
newest first, and for each GUID that failed on every attempt and is not
stored here asks for a redelivery once, remembering it (redelivery_requests)
and auditing it.
https://docs.github.com/en/webhooks/using-webhooks/handling-failed-webhook-deliveries
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from forgea_gh import errors, timeutil
from forgea_gh.github import client as client_mod
from forgea_gh.store import base

log = logging.getLogger(__name__)

# GitHub keeps deliveries for 3 days.
WINDOW = timedelta(days=3)
ACTOR = "redelivery"


@dataclass(slots=True)
class Report:
    """What one reconciliation saw and did."""

    listed: int = 0  # deliveries inside the window
    failed: int = 0  # GUIDs with no successful attempt
    stored: int = 0  # of those, already stored here
    asked_before: int = 0  # of those, redelivery already requested
    requested: list[str] = field(default_factory=list)  # GUIDs asked for now (or would be)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "failed": self.failed,
            "stored": self.stored,
            "asked_before": self.asked_before,
            "requested": self.requested,
            "errors": self.errors,
        }


def hooks_from(hooks: Sequence[str], app: bool) -> list[client_mod.HookRef]:
    refs = [client_mod.HookRef.parse(h) for h in hooks]
    return [*refs, client_mod.HookRef.app()] if app else refs


def _delivered_at(delivery: dict[str, Any]) -> datetime | None:
    text = delivery.get("delivered_at")
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _succeeded(delivery: dict[str, Any]) -> bool:
    code = delivery.get("status_code")
    return isinstance(code, int) and 200 <= code < 300


async def reconcile(
    github: client_mod.GitHubClient,
    store: base.Store,
    hooks: Sequence[client_mod.HookRef],
    *,
    since: datetime | None = None,
    dry_run: bool = False,
) -> Report:
    """One pass over `hooks`; `since` narrows GitHub's 3-day window."""
    now = timeutil.utcnow()
    start = max(since or now - WINDOW, now - WINDOW)
    report = Report()
    for hook in hooks:
        try:
            await _reconcile_hook(github, store, hook, start, dry_run, report)
        except errors.ForgeaError as exc:
            # One hook's failure (e.g. a deleted hook: 404) must not stop the others.
            report.errors.append(f"{hook}: {exc}")
            log.error("redelivery: %s: %s", hook, exc)
    return report


async def _reconcile_hook(
    github: client_mod.GitHubClient,
    store: base.Store,
    hook: client_mod.HookRef,
    start: datetime,
    dry_run: bool,
    report: Report,
) -> None:
    failed: dict[str, dict[str, Any]] = {}  # guid -> its newest failed attempt
    succeeded: set[str] = set()
    async for delivery in github.list_hook_deliveries(hook):
        at = _delivered_at(delivery)
        if at is not None and at < start:
            break  # newest first: the rest is older still
        guid = delivery.get("guid")
        if not isinstance(guid, str) or not isinstance(delivery.get("id"), int):
            continue
        report.listed += 1
        if _succeeded(delivery):
            succeeded.add(guid)
        else:
            failed.setdefault(guid, delivery)
    candidates = [g for g in failed if g not in succeeded]
    report.failed += len(candidates)
    if not candidates:
        return
    key = str(hook)

    async def known(tx: base.LabTx) -> tuple[set[str], set[str]]:
        return await tx.stored_guids(candidates), await tx.redeliveries_asked(key, candidates)

    stored, asked = await store.read(known)
    report.stored += len(stored)
    report.asked_before += len(asked - stored)
    for guid in candidates:
        if guid in stored or guid in asked:
            continue
        delivery = failed[guid]
        report.requested.append(guid)
        if dry_run:
            continue
        try:
            await github.redeliver(hook, delivery["id"])
            outcome = "requested"
        except errors.PermanentError as exc:
            # Asking again would fail the same way: remember it as failed.
            outcome = f"failed: {exc}"[:500]
            report.errors.append(f"{hook} {guid}: {exc}")
        await store.transaction(
            functools.partial(_remember, hook=key, guid=guid, delivery=delivery, outcome=outcome)
        )
        log.info("redelivery of %s on %s: %s", guid, key, outcome)


async def _remember(
    tx: base.LabTx, *, hook: str, guid: str, delivery: dict[str, Any], outcome: str
) -> None:
    event, action = delivery.get("event"), delivery.get("action")
    await tx.record_redelivery(hook, guid, delivery["id"], event, action, outcome)
    await tx.audit(
        "delivery.redelivery_requested" if outcome == "requested" else "delivery.redelivery_failed",
        actor=ACTOR,
        subject=("hook", hook),
        guid=guid,
        detail={
            "github_delivery_id": delivery["id"],
            "event": event,
            "action": action,
            "status": delivery.get("status"),
            "outcome": outcome,
        },
    )
