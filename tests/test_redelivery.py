"""The redelivery reconciler against FakeGitHub: ask once for every failed delivery missing here.

GitHub keeps a hook's deliveries for 3 days and never retries a failed one
by itself. The reconciler (in-process, and `forgea-gh redeliver` as a
subprocess) pages through them, and for each GUID that failed on every
attempt and is not stored locally asks GitHub once for a redelivery.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from forgea_gh.github import redelivery
from tests import payloads
from tests.e2e_support import (
    GITHUB_TOKEN,
    audit,
    config_for,
    daemon,
    deliver,
    fast_retries,
    rows,
    served_fake,
    settle,
)
from tests.fake_github import FakeGitHub, Reply
from tests.support import ROOT

HOOK = "owner/repo#9"
HOOK_ID = 9
DELIVERIES = "/repos/owner/repo/hooks/9/deliveries"
ATTEMPTS = "/repos/owner/repo/hooks/9/deliveries/{delivery_id}/attempts"


@pytest.fixture(autouse=True)
def fast_github_retries() -> Iterator[None]:
    with fast_retries(3):
        yield


@dataclass(frozen=True)
class Attempt:
    """One delivery as GitHub lists it: a GUID's try, `age` before now."""

    guid: str
    status_code: int
    age: timedelta
    redelivery: bool = False


# GUIDs that failed and were never stored here: the ones to ask for.
MISSING_RECENT = ["missing-5m", "missing-twice", "missing-40m"]  # inside the last hour
MISSING_OLDER = ["missing-230m-page2", "missing-250m-page2"]  # older than 1 h, on page 2
# Failed at GitHub's end, yet stored here (the answer was lost, not the delivery).
STORED = ["stored-15m", "stored-240m-page2"]

SPECIAL = [
    Attempt("ok-after-redelivery", 202, timedelta(minutes=10), redelivery=True),
    Attempt("ok-after-redelivery", 502, timedelta(minutes=50)),
    Attempt("missing-5m", 502, timedelta(minutes=5)),
    Attempt("stored-15m", 0, timedelta(minutes=15)),  # timed out
    Attempt("missing-twice", 500, timedelta(minutes=20), redelivery=True),
    Attempt("missing-twice", 503, timedelta(minutes=30)),
    Attempt("missing-40m", 401, timedelta(minutes=40)),
    Attempt("missing-230m-page2", 500, timedelta(minutes=230)),
    Attempt("stored-240m-page2", 504, timedelta(minutes=240)),
    Attempt("missing-250m-page2", 0, timedelta(minutes=250)),
    # Outside GitHub's 3-day window: listed by the fake, never asked for.
    Attempt("too-old", 500, timedelta(days=3, hours=2)),
]
# Succeeded deliveries every 2 minutes: 130 of them, so the list needs two pages of 100.
FILLER = [Attempt(f"ok-{n}", 202, timedelta(minutes=2 * n + 1)) for n in range(130)]


def github_deliveries(now: datetime) -> list[dict[str, Any]]:
    """The hook's deliveries, newest first, as GitHub's API lists them."""
    attempts = sorted(SPECIAL + FILLER, key=lambda a: a.age)
    listed = []
    for n, attempt in enumerate(attempts):
        at = now - attempt.age
        listed.append(
            {
                "id": 90_000_000 - n,  # GitHub's ids grow with time
                "guid": attempt.guid,
                "delivered_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "redelivery": attempt.redelivery,
                "duration": 0.31,
                "status": "OK" if 200 <= attempt.status_code < 300 else "Failed",
                "status_code": attempt.status_code,
                "event": "push",
                "action": None,
                "installation_id": None,
                "repository_id": 4242,
            }
        )
    return listed


def delivery_id(fake: FakeGitHub, guid: str) -> int:
    """The newest failed delivery of `guid`: the one to redeliver."""
    found = [
        d for d in fake.deliveries[HOOK] if d["guid"] == guid and not 200 <= d["status_code"] < 300
    ]
    newest: int = found[0]["id"]
    return newest


def newest_first(fake: FakeGitHub, guids: list[str]) -> list[str]:
    order = {g: n for n, g in reversed(list(enumerate(d["guid"] for d in fake.deliveries[HOOK])))}
    return sorted(guids, key=order.__getitem__)


async def store_locally(client: Any, guids: list[str]) -> None:
    """Deliver these GUIDs from hook 9 as GitHub did (their answer was what got lost)."""
    for n, guid in enumerate(guids):
        body = payloads.push([payloads.commit(f"stored-{n}")])
        answer = await deliver(client, body, guid=guid, hook_id=HOOK_ID)
        assert answer.status_code == 202, answer.text


async def test_the_reconciler_asks_once_for_each_failed_delivery_missing_here(
    tmp_path: Path,
) -> None:
    async with served_fake() as (fake, url), daemon(config_for(tmp_path, url)) as d:
        fake.seed_deliveries(HOOK, github_deliveries(datetime.now(UTC)))
        # GitHub refuses one redelivery for good: remembered as failed, not asked again.
        refused = "missing-40m"
        fake.script(
            "POST",
            ATTEMPTS.format(delivery_id=delivery_id(fake, refused)),
            [Reply(422, json={"message": "This delivery cannot be redelivered"})],
        )
        await store_locally(d.client, STORED)
        await settle(d.db)
        runtime = d.app.state.daemon
        assert runtime.github is not None
        hooks = redelivery.hooks_from([HOOK], app=False)

        first = await redelivery.reconcile(runtime.github, runtime.store, hooks)

        wanted = newest_first(fake, MISSING_RECENT + MISSING_OLDER)
        assert first.requested == wanted
        asked = [r.path for r in fake.requests_to("POST", ATTEMPTS)]
        assert asked == [ATTEMPTS.format(delivery_id=delivery_id(fake, g)) for g in wanted]
        accepted = [g for g in wanted if g != refused]
        assert fake.redeliveries == [(HOOK, delivery_id(fake, g)) for g in accepted]
        # missing-twice failed twice: asked once, for its newest attempt.
        assert asked.count(ATTEMPTS.format(delivery_id=delivery_id(fake, "missing-twice"))) == 1
        # Pagination followed: page one of 100, then the cursor GitHub linked.
        pages = fake.requests_to("GET", DELIVERIES)
        assert [p.query for p in pages] == [
            {"per_page": "100"},
            {"per_page": "100", "cursor": "100"},
        ]
        assert first.listed == len(SPECIAL) + len(FILLER) - 1  # all but the too-old one
        assert first.failed == len(wanted) + len(STORED)
        assert first.stored == len(STORED)
        assert first.asked_before == 0
        assert len(first.errors) == 1 and refused in first.errors[0]

        second = await redelivery.reconcile(runtime.github, runtime.store, hooks)
        assert second.requested == []
        assert second.asked_before == len(wanted)
        assert second.stored == len(STORED)
        assert second.errors == []
        assert len(fake.requests_to("POST", ATTEMPTS)) == len(wanted)  # nothing asked twice
        assert fake.unused_replies() == 0

        remembered = rows(
            d.db,
            "SELECT hook, guid, github_delivery_id, event, outcome FROM redelivery_requests "
            "ORDER BY id",
        )
        assert [(r["hook"], r["guid"], r["github_delivery_id"]) for r in remembered] == [
            (HOOK, g, delivery_id(fake, g)) for g in wanted
        ]
        outcomes = {r["guid"]: r["outcome"] for r in remembered}
        assert {g for g, o in outcomes.items() if o == "requested"} == set(accepted)
        assert outcomes[refused].startswith("failed: ")
        assert "This delivery cannot be redelivered" in outcomes[refused]

        requested_audit = audit(d.db, "delivery.redelivery_requested")
        assert [r["delivery_guid"] for r in requested_audit] == accepted
        assert {(r["actor"], r["subject_type"], r["subject_id"]) for r in requested_audit} == {
            ("redelivery", "hook", HOOK)
        }
        assert requested_audit[0]["detail"]["github_delivery_id"] == delivery_id(fake, accepted[0])
        (failed_audit,) = audit(d.db, "delivery.redelivery_failed")
        assert failed_audit["delivery_guid"] == refused

        status = (await d.client.get("/status")).json()
        assert status["redelivery"]["requested"] == len(accepted)
        assert status["redelivery"]["failed"] == 1
        assert status["redelivery"]["last_requested_at"] is not None


def forgea_gh(db: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`forgea-gh ARGS` configured by environment variables only, as an operator might."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGEA_GH_")}
    env |= {
        "FORGEA_GH_GITHUB__TOKEN": GITHUB_TOKEN,
        "FORGEA_GH_GITHUB__API_URL": url,
        "FORGEA_GH_REDELIVERY__HOOKS": json.dumps([HOOK]),
        "FORGEA_GH_DATABASE__URL": f"sqlite:///{db}",
        "FORGEA_GH_LOG__LEVEL": "warning",
    }
    return subprocess.run(
        [sys.executable, "-m", "forgea_gh", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=ROOT,
    )


async def test_redeliver_cli_dry_run_lists_and_since_narrows(tmp_path: Path) -> None:
    async with served_fake() as (fake, url):
        config = config_for(tmp_path, url)
        fake.seed_deliveries(HOOK, github_deliveries(datetime.now(UTC)))
        async with daemon(config) as d:
            await store_locally(d.client, STORED)
            await settle(d.db)
        db = Path(config.database.sqlite_path)

        dry = await asyncio.to_thread(forgea_gh, db, url, "redeliver", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        listed = json.loads(dry.stdout)
        assert listed["dry_run"] is True
        assert listed["requested"] == newest_first(fake, MISSING_RECENT + MISSING_OLDER)
        assert listed["stored"] == len(STORED)
        assert fake.requests_to("POST", ATTEMPTS) == []
        assert fake.redeliveries == []
        assert rows(db, "SELECT * FROM redelivery_requests") == []
        assert audit(db, "delivery.redelivery_requested") == []

        # --since 1h: the older failures are left alone.
        recent = await asyncio.to_thread(forgea_gh, db, url, "redeliver", "--since", "1h", "--json")
        assert recent.returncode == 0, recent.stderr
        asked = json.loads(recent.stdout)
        assert asked["dry_run"] is False
        assert asked["requested"] == newest_first(fake, MISSING_RECENT)
        assert fake.redeliveries == [
            (HOOK, delivery_id(fake, g)) for g in newest_first(fake, MISSING_RECENT)
        ]
        # Newest first: the listing stops at the first delivery older than --since,
        # so this run read page one only (after the dry run's two pages).
        pages = fake.requests_to("GET", DELIVERIES)
        assert [p.query.get("cursor") for p in pages] == [None, "100", None]

        # The whole window now: only the older ones, never the same one twice.
        rest = await asyncio.to_thread(forgea_gh, db, url, "redeliver", "--json")
        assert rest.returncode == 0, rest.stderr
        assert json.loads(rest.stdout)["requested"] == newest_first(fake, MISSING_OLDER)
        assert json.loads(rest.stdout)["asked_before"] == len(MISSING_RECENT)
        everything = newest_first(fake, MISSING_RECENT) + newest_first(fake, MISSING_OLDER)
        assert fake.redeliveries == [(HOOK, delivery_id(fake, g)) for g in everything]
        assert [
            r["guid"] for r in rows(db, "SELECT guid FROM redelivery_requests ORDER BY id")
        ] == (everything)
