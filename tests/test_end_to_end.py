"""Deliveries through a real uvicorn server into the real store and processor."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from pathlib import Path

import httpx

from forgea_gh import app as app_mod
from forgea_gh import jobs
from forgea_gh.handlers import registry
from tests.support import (
    asgi_client,
    fixture_payloads,
    live_server,
    make_config,
    push_body,
    signed_headers,
)

URL = "/webhooks/github"


def query(path: str, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def wait_until_idle(client: httpx.AsyncClient, timeout: float = 20) -> dict[str, int]:
    """Poll /status until nothing is pending, processing or failed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        counts: dict[str, int] = (await client.get("/status")).json()["jobs"]
        if counts["pending"] == counts["processing"] == counts["failed"] == 0:
            return counts
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"queue not drained: {counts}")
        await asyncio.sleep(0.05)


async def test_every_fixture_payload_is_stored_and_processed(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    payloads = list(fixture_payloads())
    assert len(payloads) >= 20, "shared/fixtures/github-payloads not found"
    async with live_server(app_mod.build(config)) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            for event, path in payloads:
                body = path.read_bytes()
                response = await client.post(URL, content=body, headers=signed_headers(body, event))
                assert response.status_code == 202, (path, response.text)
            counts = await wait_until_idle(client)
    assert counts["completed"] == len(payloads)
    assert counts["dead_letter"] == 0
    stored = query(config.database.sqlite_path, "SELECT event, count(*) FROM deliveries GROUP BY 1")
    assert dict(stored) == dict(Counter(event for event, _ in payloads))


async def test_concurrent_deliveries_with_duplicates_are_stored_and_processed_once(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, worker={"concurrency": 16})
    handled: Counter[str] = Counter()

    async def count_push(claimed: jobs.ClaimedJob) -> str:
        assert claimed.delivery is not None
        handled[claimed.delivery.guid] += 1
        await asyncio.sleep(0.001)
        return "handled: counted"

    table = registry.default_router()
    table.on_event("push", count_push)
    body = push_body()
    distinct = [f"guid-{n:03d}" for n in range(150)]
    requests = [*distinct, *random.Random(7).sample(distinct, 50)]
    random.Random(8).shuffle(requests)

    async with live_server(app_mod.build(config, router=table)) as base_url:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(URL, content=body, headers=signed_headers(body, guid=guid))
                    for guid in requests
                )
            )
            counts = await wait_until_idle(client)

    by_guid: dict[str, list[int]] = {}
    for guid, response in zip(requests, responses, strict=True):
        by_guid.setdefault(guid, []).append(response.status_code)
    # Exactly one 202 per distinct delivery; every repeat is a 200 duplicate.
    for guid, codes in by_guid.items():
        assert sorted(codes) == [200] * (len(codes) - 1) + [202], (guid, codes)
    path = config.database.sqlite_path
    assert query(path, "SELECT count(*) FROM deliveries")[0][0] == 150
    assert query(path, "SELECT count(*), sum(attempts) FROM jobs") == [(150, 150)]
    assert counts["completed"] == 150
    assert handled == Counter({guid: 1 for guid in distinct})


async def test_a_worker_apart_from_the_receiver_wakes_on_its_commits(tmp_path: Path) -> None:
    # A tick of 30 s: only the worker following the store's commits can
    # explain a delivery completed within the wait below.
    config = make_config(tmp_path, worker={"poll_interval_seconds": 30})
    worker = app_mod.build(config, role=app_mod.Role.WORKER)
    receiver = app_mod.build(config, role=app_mod.Role.RECEIVER)
    async with asgi_client(worker) as worker_client, asgi_client(receiver) as receiver_client:
        body = push_body()
        answer = await receiver_client.post(URL, content=body, headers=signed_headers(body, "push"))
        assert answer.status_code == 202
        counts = await wait_until_idle(worker_client, timeout=10)
        assert counts["completed"] == 1
