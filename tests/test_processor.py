"""The job engine against a real SQLite store: claims, retries, dead letters, leases."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from typing import Any

import pytest

from forgea_gh import errors, jobs, processor, retry, timeutil, webhook
from forgea_gh.handlers import registry, router
from forgea_gh.store import base, sqlite
from tests.support import SECRET, FakeClock, push_body, signed_headers


def delivery(
    event: str = "push", guid: str | None = None, body: bytes | None = None
) -> webhook.Delivery:
    body = body if body is not None else push_body()
    return webhook.Delivery.from_http(
        signed_headers(body, event, guid=guid), body, [SECRET.encode()]
    )


class Flaky:
    """A handler that fails `failures` times, then succeeds; counts its calls."""

    def __init__(self, failures: int, error: type[Exception] = errors.RetryableError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self, claimed: jobs.ClaimedJob) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "handled: flaky"


def make_processor(
    store: sqlite.SqliteStore,
    clock: FakeClock,
    handler: router.Handler,
    *,
    max_attempts: int = 3,
    lease: float = 30,
) -> processor.Processor:
    table = registry.default_router()
    table.on_event("push", handler)
    policy = retry.RetryPolicy(base_seconds=10, max_seconds=1000, max_attempts=max_attempts)
    return processor.Processor(
        store,
        table,
        policy,
        concurrency=4,
        lease_seconds=lease,
        worker_id="w1",
        clock=clock,
        rand=lambda: 1.0,
    )


def rows(store: sqlite.SqliteStore, sql: str, *params: object) -> list[sqlite3.Row]:
    conn = sqlite3.connect(store.path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def test_failures_back_off_then_dead_letter_then_replay_completes(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    flaky = Flaky(failures=3)
    proc = make_processor(store, clock, flaky, max_attempts=3)
    stored = await store.enqueue_delivery(delivery(guid="flaky-1"), clock())
    assert stored.outcome is jobs.Enqueued.STORED

    # Attempt 1 fails: retry after base * 2^0 = 10 s (rand fixed at 1.0).
    assert await proc.run_once() == 1
    job = rows(store, "SELECT * FROM jobs")[0]
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert timeutil.from_text(job["next_attempt_at"]) == clock() + timedelta(seconds=10)

    # Not due yet: nothing is claimed.
    clock.advance(9)
    assert await proc.run_once() == 0

    # Attempt 2 fails: the delay grows to 20 s.
    clock.advance(1)
    assert await proc.run_once() == 1
    job = rows(store, "SELECT * FROM jobs")[0]
    assert timeutil.from_text(job["next_attempt_at"]) == clock() + timedelta(seconds=20)

    # Attempt 3 fails: attempts are used up, dead letter.
    clock.advance(20)
    assert await proc.run_once() == 1
    job = rows(store, "SELECT * FROM jobs")[0]
    assert (job["status"], job["attempts"], job["last_error"]) == ("dead_letter", 3, "failure 3")
    history = rows(store, "SELECT attempt, error_class, message FROM job_errors ORDER BY id")
    assert [tuple(r) for r in history] == [
        (1, "RetryableError", "failure 1"),
        (2, "RetryableError", "failure 2"),
        (3, "RetryableError", "failure 3"),
    ]
    clock.advance(10_000)
    assert await proc.run_once() == 0  # dead letters stay dead

    page = await store.dead_letters(base.DeadLetterFilter(), None, 10)
    assert [item["guid"] for item in page.items] == ["flaky-1"]

    replayed = await store.replay(base.ReplaySelector(guid="flaky-1"), clock(), "test")
    assert [r.previous_status for r in replayed] == ["dead_letter"]
    assert await proc.run_once() == 1
    job = rows(store, "SELECT * FROM jobs")[0]
    assert (job["status"], job["attempts"], job["outcome"]) == ("completed", 1, "handled: flaky")
    assert flaky.calls == 4
    actions = [r["action"] for r in rows(store, "SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["job.dead_lettered", "job.replayed"]


async def test_permanent_error_dead_letters_at_once(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    proc = make_processor(store, clock, Flaky(failures=99, error=errors.PermanentError))
    await store.enqueue_delivery(delivery(), clock())
    await proc.run_once()
    job = rows(store, "SELECT * FROM jobs")[0]
    assert (job["status"], job["attempts"]) == ("dead_letter", 1)
    assert len(rows(store, "SELECT * FROM job_errors")) == 1


async def test_unexpected_exception_is_retried(store: sqlite.SqliteStore, clock: FakeClock) -> None:
    proc = make_processor(store, clock, Flaky(failures=1, error=KeyError))
    await store.enqueue_delivery(delivery(), clock())
    await proc.run_once()
    job = rows(store, "SELECT * FROM jobs")[0]
    assert job["status"] == "failed"
    assert rows(store, "SELECT error_class FROM job_errors")[0][0] == "KeyError"


async def test_retry_after_is_honoured(store: sqlite.SqliteStore, clock: FakeClock) -> None:
    async def rate_limited(claimed: jobs.ClaimedJob) -> str:
        raise errors.RetryableError("slow down", retry_after=300)

    proc = make_processor(store, clock, rate_limited)
    await store.enqueue_delivery(delivery(), clock())
    await proc.run_once()
    job = rows(store, "SELECT * FROM jobs")[0]
    assert timeutil.from_text(job["next_attempt_at"]) == clock() + timedelta(seconds=300)


async def test_unknown_events_and_ping_complete_without_dead_letter(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    proc = make_processor(store, clock, Flaky(failures=0))
    await store.enqueue_delivery(delivery("ping", body=b'{"zen": "z", "hook_id": 5}'), clock())
    await store.enqueue_delivery(delivery("sponsorship", body=b'{"action": "created"}'), clock())
    await proc.run_once()
    outcomes = [r[0] for r in rows(store, "SELECT outcome FROM jobs ORDER BY id")]
    assert outcomes == ["ignored: ping from hook 5", "ignored: no handler for event 'sponsorship'"]


async def test_expired_lease_is_rescued_and_counts_as_an_attempt(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    proc = make_processor(store, clock, Flaky(failures=0), max_attempts=2, lease=60)
    await store.enqueue_delivery(delivery(guid="crashy"), clock())
    # A worker that claims and then dies: its lease runs out.
    claimed = await store.claim_due("dead-worker", 10, clock(), 60)
    assert len(claimed) == 1
    clock.advance(30)
    assert await proc.rescue_expired_leases() == []  # still leased
    clock.advance(31)
    rescued = await proc.rescue_expired_leases()
    assert [(r.attempts, r.dead_lettered) for r in rescued] == [(1, False)]
    job = rows(store, "SELECT * FROM jobs")[0]
    assert (job["status"], job["locked_by"]) == ("failed", None)
    assert rows(store, "SELECT error_class FROM job_errors")[0][0] == "LeaseExpired"
    # The dead worker's late completion is refused: it no longer holds the lease.
    assert not await store.complete(job["id"], "dead-worker", clock(), "late")

    # Crashes until the last attempt (the store gives jobs 3): then dead
    # letter, so a poison job that kills its worker cannot loop forever.
    outcomes = []
    for _ in range(2):
        clock.advance(100)
        await store.claim_due("dead-worker", 10, clock(), 60)
        clock.advance(61)
        outcomes += [(r.attempts, r.dead_lettered) for r in await proc.rescue_expired_leases()]
    assert outcomes == [(2, False), (3, True)]
    assert rows(store, "SELECT status FROM jobs")[0][0] == "dead_letter"
    assert len(rows(store, "SELECT * FROM job_errors")) == 3


@pytest.mark.parametrize(
    ("work_seconds", "grace_seconds", "expected"),
    [
        # Not done within the grace period: released, its attempt not counted.
        (60, 0.1, ("pending", 0, None)),
        # Done within it: let finish.
        (0.05, 5, ("completed", 1, None)),
    ],
)
async def test_shutdown_lets_quick_jobs_finish_and_releases_the_rest(
    store: sqlite.SqliteStore,
    clock: FakeClock,
    work_seconds: float,
    grace_seconds: float,
    expected: tuple[str, int, None],
) -> None:
    started = asyncio.Event()

    async def work(claimed: jobs.ClaimedJob) -> str:
        started.set()
        await asyncio.sleep(work_seconds)
        return "handled: in time"

    proc = make_processor(store, clock, work)
    await store.enqueue_delivery(delivery(), clock())
    proc.start()
    proc.wake()
    await asyncio.wait_for(started.wait(), 5)
    await proc.stop(grace_seconds=grace_seconds)
    job = rows(store, "SELECT * FROM jobs")[0]
    assert (job["status"], job["attempts"], job["locked_by"]) == expected


async def test_a_slow_job_holds_only_its_own_slot(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    slow_started, release = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def work(claimed: jobs.ClaimedJob) -> str:
        assert claimed.delivery is not None
        if claimed.delivery.guid == "slow":
            slow_started.set()
            await release.wait()
        done.append(claimed.delivery.guid)
        return "handled: in order of arrival"

    proc = make_processor(store, clock, work)  # 4 slots
    await store.enqueue_delivery(delivery(guid="slow"), clock())
    proc.start()
    proc.wake()
    try:
        await asyncio.wait_for(slow_started.wait(), 5)
        # Twice the three free slots: each finished job's slot is refilled
        # while the slow one still runs.
        quick = [f"quick-{n}" for n in range(6)]
        for guid in quick:
            await store.enqueue_delivery(delivery(guid=guid), clock())
            proc.wake()
        await asyncio.wait_for(_all_done(done, quick), 5)
        assert "slow" not in done
    finally:
        release.set()
        await proc.stop(grace_seconds=5)
    assert sorted(done) == [*quick, "slow"]


async def test_stop_cancels_jobs_even_when_its_grace_ends_during_a_claim(
    store: sqlite.SqliteStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, claiming = asyncio.Event(), asyncio.Event()

    async def long_job(claimed: jobs.ClaimedJob) -> str:
        started.set()
        await asyncio.sleep(60)  # a long rate-limit wait
        return "handled: too late"

    proc = make_processor(store, clock, long_job)
    real_claim = store.claim_due

    async def claim_behind_the_write_lock(*args: Any, **kwargs: Any) -> list[jobs.ClaimedJob]:
        if started.is_set():  # the refill claim, stuck (busy_timeout, a long write)
            claiming.set()
            await asyncio.sleep(1)
        return await real_claim(*args, **kwargs)

    monkeypatch.setattr(store, "claim_due", claim_behind_the_write_lock)
    await store.enqueue_delivery(delivery(guid="long"), clock())
    proc.start(follow_seconds=None)
    proc.wake()
    await asyncio.wait_for(started.wait(), 5)
    proc.wake()
    await asyncio.wait_for(claiming.wait(), 5)
    # Without cancelling the job, stop() would wait out its 60 s.
    await asyncio.wait_for(proc.stop(grace_seconds=0.1), 10)
    job = rows(store, "SELECT * FROM jobs")[0]
    assert (job["status"], job["locked_by"]) == ("pending", None)


async def test_an_unexpected_error_while_claiming_does_not_end_the_loop(
    store: sqlite.SqliteStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = make_processor(store, clock, Flaky(failures=0))
    failures = _fail_once(monkeypatch, store, "claim_due", ValueError("a bug"))
    proc.start(follow_seconds=None)
    try:
        proc.wake()
        while failures:
            await asyncio.sleep(0.01)
        await store.enqueue_delivery(delivery(guid="after-the-bug"), clock())
        proc.wake()
        await asyncio.wait_for(_completed(store, 1), 5)
    finally:
        await proc.stop(grace_seconds=1)
    assert "claiming due jobs failed unexpectedly" in caplog.text


async def test_the_processor_wakes_on_another_stores_commits_even_after_an_error(
    store: sqlite.SqliteStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = make_processor(store, clock, Flaky(failures=0))
    failures = _fail_once(monkeypatch, store, "commit_marker", RuntimeError("a bug"))
    # No scheduler here: only following the commits can wake the processor.
    proc.start(follow_seconds=0.01)
    other = sqlite.SqliteStore(store.path)  # as a receiver in another process
    await other.open()
    try:
        while failures:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the marker has been read since the error
        await other.enqueue_delivery(delivery(guid="from-elsewhere"), clock())
        await asyncio.wait_for(_completed(store, 1), 5)
    finally:
        await other.close()
        await proc.stop(grace_seconds=1)
    assert "cannot read the store's commit marker: RuntimeError('a bug')" in caplog.text


def _fail_once(
    monkeypatch: pytest.MonkeyPatch, store: sqlite.SqliteStore, method: str, error: Exception
) -> list[Exception]:
    """Make `store.<method>` raise `error` on its next call only; the list empties then."""
    real = getattr(store, method)
    failures = [error]

    async def once_broken(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, method, once_broken)
    return failures


async def _completed(store: sqlite.SqliteStore, count: int) -> None:
    while len(rows(store, "SELECT id FROM jobs WHERE status = 'completed'")) < count:
        await asyncio.sleep(0.01)


async def _all_done(done: list[str], expected: list[str]) -> None:
    while not set(expected) <= set(done):
        await asyncio.sleep(0.01)


async def test_redelivery_of_a_dead_letter_revives_it(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    proc = make_processor(store, clock, Flaky(failures=1, error=errors.PermanentError))
    original = delivery(guid="revive-me")
    await store.enqueue_delivery(original, clock())
    await proc.run_once()
    assert rows(store, "SELECT status FROM jobs")[0][0] == "dead_letter"

    again = await store.enqueue_delivery(original, clock())
    assert again.outcome is jobs.Enqueued.REVIVED
    job = rows(store, "SELECT * FROM jobs")[0]
    assert (job["status"], job["attempts"]) == ("pending", 0)
    assert len(rows(store, "SELECT * FROM deliveries")) == 1
    await proc.run_once()
    assert rows(store, "SELECT status FROM jobs")[0][0] == "completed"
    assert [r[0] for r in rows(store, "SELECT action FROM audit_log ORDER BY id")] == [
        "job.dead_lettered",
        "job.revived",
    ]

    # Once completed, the same GUID is only a duplicate.
    third = await store.enqueue_delivery(original, clock())
    assert third.outcome is jobs.Enqueued.DUPLICATE


async def test_same_guid_on_another_hook_is_a_separate_delivery(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    body = push_body()
    first = webhook.Delivery.from_http(
        signed_headers(body, guid="shared", hook_id=1), body, [SECRET.encode()]
    )
    second = webhook.Delivery.from_http(
        signed_headers(body, guid="shared", hook_id=2), body, [SECRET.encode()]
    )
    results = await asyncio.gather(
        store.enqueue_delivery(first, clock()),
        store.enqueue_delivery(second, clock()),
        store.enqueue_delivery(first, clock()),
    )
    assert [r.outcome for r in results] == [
        jobs.Enqueued.STORED,
        jobs.Enqueued.STORED,
        jobs.Enqueued.DUPLICATE,
    ]
    assert results[0].job_id == results[2].job_id != results[1].job_id


async def test_replay_by_job_id_explains_what_it_cannot_do(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    proc = make_processor(store, clock, Flaky(failures=0))
    stored = await store.enqueue_delivery(delivery(), clock())
    await proc.run_once()
    with pytest.raises(errors.ConflictError, match="is completed"):
        await store.replay(base.ReplaySelector(job_id=stored.job_id), clock(), "test")
    with pytest.raises(errors.NotFoundError, match="no job 999"):
        await store.replay(base.ReplaySelector(job_id=999), clock(), "test")


async def test_replay_all_dead_with_event_filter(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    async def fail(claimed: jobs.ClaimedJob) -> str:
        raise errors.PermanentError("bad")

    proc = make_processor(store, clock, Flaky(failures=0))
    proc.router.on_event("push", fail)
    proc.router.on_event("issues", fail)
    await store.enqueue_delivery(delivery("push"), clock())
    await store.enqueue_delivery(delivery("issues", body=b'{"action": "opened"}'), clock())
    await proc.run_once()
    only_push = await store.replay(base.ReplaySelector(all_dead=True, event="push"), clock(), "t")
    assert len(only_push) == 1
    rest = await store.replay(base.ReplaySelector(all_dead=True), clock(), "t")
    assert len(rest) == 1


async def test_dead_letter_pages_and_detail(store: sqlite.SqliteStore, clock: FakeClock) -> None:
    proc = make_processor(store, clock, Flaky(failures=99, error=errors.PermanentError))
    for n in range(5):
        await store.enqueue_delivery(delivery(guid=f"d{n}"), clock())
    while await proc.run_once():
        pass
    first = await store.dead_letters(base.DeadLetterFilter(), None, 2)
    second = await store.dead_letters(base.DeadLetterFilter(), first.next_cursor, 2)
    third = await store.dead_letters(base.DeadLetterFilter(), second.next_cursor, 2)
    guids = [i["guid"] for page in (first, second, third) for i in page.items]
    assert guids == ["d4", "d3", "d2", "d1", "d0"]
    assert third.next_cursor is None
    only = await store.dead_letters(base.DeadLetterFilter(guid="d2"), None, 10)
    assert [i["guid"] for i in only.items] == ["d2"]
    assert (await store.dead_letters(base.DeadLetterFilter(event="ping"), None, 10)).items == []

    detail = await store.dead_letter(first.items[0]["id"], include_payload=True)
    assert detail["errors"][0]["error_class"] == "PermanentError"
    assert detail["payload"]["ref"] == "refs/tags/simple-tag"
    assert "payload" not in await store.dead_letter(first.items[0]["id"], include_payload=False)
    with pytest.raises(errors.BadRequestError):
        await store.dead_letters(base.DeadLetterFilter(), "not-a-cursor", 2)


async def test_prune_takes_old_completed_work_only(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    async def fail(claimed: jobs.ClaimedJob) -> str:
        raise errors.PermanentError("bad")

    proc = make_processor(store, clock, Flaky(failures=0))
    await store.enqueue_delivery(delivery("ping", body=b'{"zen": "z"}'), clock())
    await proc.run_once()
    proc.router.on_event("push", fail)
    await store.enqueue_delivery(delivery("push"), clock())
    await proc.run_once()
    clock.advance(86400 * 30)
    await store.enqueue_delivery(delivery("ping", body=b'{"zen": "recent"}'), clock())
    await proc.run_once()

    result = await store.prune_completed(clock() - timedelta(days=14))
    assert (result.jobs, result.deliveries) == (1, 1)
    statuses = sorted(r[0] for r in rows(store, "SELECT status FROM jobs"))
    assert statuses == ["completed", "dead_letter"]
    assert len(rows(store, "SELECT * FROM deliveries")) == 2
    assert rows(store, "SELECT action FROM audit_log ORDER BY id DESC")[0][0] == "retention.pruned"


async def test_status_summary_counts(store: sqlite.SqliteStore, clock: FakeClock) -> None:
    proc = make_processor(store, clock, Flaky(failures=99))
    await store.enqueue_delivery(delivery(), clock())
    await store.enqueue_delivery(delivery("ping", body=b"{}"), clock())
    clock.advance(5)
    summary = await store.status_summary(clock())
    assert summary.totals()["pending"] == 2
    assert summary.oldest_pending_age_seconds == 5
    await proc.run_once()
    summary = await store.status_summary(clock())
    assert summary.totals() == {
        "pending": 0,
        "processing": 0,
        "completed": 1,
        "failed": 1,
        "dead_letter": 0,
    }
    assert summary.last_processed_at == timeutil.to_text(clock())


async def test_closed_store_refuses_work(tmp_path: object, clock: FakeClock) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    store = sqlite.SqliteStore(str(tmp_path / "c.db"))
    await store.open()
    await store.close()
    with pytest.raises(errors.StoreError, match="closed"):
        await store.enqueue_delivery(delivery(), clock())


async def test_tick_renews_the_leases_of_running_jobs(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def long_running(claimed: jobs.ClaimedJob) -> str:
        started.set()
        await release.wait()
        return "handled: at last"

    proc = make_processor(store, clock, long_running, lease=60)
    await store.enqueue_delivery(delivery(), clock())
    task = asyncio.create_task(proc.run_once())
    await asyncio.wait_for(started.wait(), 5)
    for _ in range(5):  # five minutes of ticks, each within the lease
        clock.advance(50)
        await proc.tick()
    job = rows(store, "SELECT * FROM jobs")[0]
    assert (job["status"], job["attempts"]) == ("processing", 1)
    assert timeutil.from_text(job["locked_until"]) == clock() + timedelta(seconds=60)
    release.set()
    await task
    assert rows(store, "SELECT status FROM jobs")[0][0] == "completed"
    assert rows(store, "SELECT * FROM job_errors") == []


async def test_a_job_that_cannot_record_its_outcome_does_not_strand_its_siblings(
    store: sqlite.SqliteStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = make_processor(store, clock, Flaky(failures=0))
    first = await store.enqueue_delivery(delivery(guid="s-1"), clock())
    await store.enqueue_delivery(delivery(guid="s-2"), clock())
    real_complete = store.complete

    async def complete(job_id: int, *args: object) -> bool:
        if job_id == first.job_id:
            raise errors.StoreError("database is locked")
        return await real_complete(job_id, *args)  # type: ignore[arg-type]

    real_fail = store.fail

    async def fail(job_id: int, *args: object) -> bool:
        if job_id == first.job_id:
            raise errors.StoreError("database is locked")
        return await real_fail(job_id, *args)  # type: ignore[arg-type]

    # Neither the outcome nor the failure of job 1 can be written.
    monkeypatch.setattr(store, "complete", complete)
    monkeypatch.setattr(store, "fail", fail)
    assert await proc.run_once() == 2  # does not raise
    statuses = dict(rows(store, "SELECT id, status FROM jobs"))
    assert statuses[first.job_id] == "processing"  # its lease will be rescued
    assert sorted(statuses.values()) == ["completed", "processing"]
    assert proc._in_flight == set()


async def test_shutdown_releases_everything_the_worker_holds(
    store: sqlite.SqliteStore, clock: FakeClock
) -> None:
    proc = make_processor(store, clock, Flaky(failures=0))
    await store.enqueue_delivery(delivery(), clock())
    # A claim that committed although its caller was cancelled: not in flight.
    await store.claim_due(proc.worker_id, 10, clock(), 60)
    proc.start()
    await proc.stop(grace_seconds=1)
    job = rows(store, "SELECT * FROM jobs")[0]
    assert (job["status"], job["attempts"], job["locked_by"]) == ("pending", 0, None)
