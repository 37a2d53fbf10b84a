"""kill -9 of a real `forgea-gh serve` while it is processing, then a restart.

The promise under test (DESIGN §3, §5): a delivery answered 2xx is committed
before the answer goes out, so it survives the process dying at any instant;
a job leased by the dead process is rescued once its lease expires, the
rescue counts as an attempt, and the job then completes. Nothing stays
`processing` for ever, and no delivery ends up with a second job.

The daemons are subprocesses (`python -m forgea_gh serve`) configured by
environment variables only, on one database file in tmp_path, each on a free
loopback port. The database is inspected from outside with sqlite3 (WAL: a
reader never blocks the daemon's writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import SECRET, free_port, push_body, signed_headers

# The processor keeps pace with ingest on a 2-core machine, so a backlog is
# built first by a receiver-only daemon; the full daemon then starts on it
# while more deliveries keep arriving.
BACKLOG = 300
LIVE = 300  # sent to the full daemon; the kill cuts them short
SEND_CONCURRENCY = 32  # requests in flight at once
MIN_COMPLETED_BEFORE_KILL = 20  # the processor has demonstrably been working
MIN_LIVE_ACKED_BEFORE_KILL = 20  # ... and the receiver answering beside it
LEASE_SECONDS = 1.0  # an expired lease is rescued about a second after the restart
WORKER_CONCURRENCY = 4

READY_TIMEOUT = 20.0
KILL_TIMEOUT = 20.0  # to reach a moment worth killing at
DRAIN_TIMEOUT = 30.0  # after the restart, for the backlog to complete
STOP_TIMEOUT = 15.0

UNFINISHED = ("pending", "processing", "failed")


# -- the daemon as a subprocess ----------------------------------------------


@dataclass
class Daemon:
    """One `forgea-gh serve` process on `db`, its stdout and stderr appended to `log`."""

    db: Path
    log: Path
    role: str = "all"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/webhooks/github"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORGEA_GH_")}
        env.update(
            {
                "FORGEA_GH_DATABASE__URL": f"sqlite:///{self.db}",
                "FORGEA_GH_DATABASE__SYNCHRONOUS": "FULL",
                "FORGEA_GH_WEBHOOK__SECRETS": f'["{SECRET}"]',
                "FORGEA_GH_WORKER__LEASE_SECONDS": str(LEASE_SECONDS),
                "FORGEA_GH_WORKER__POLL_INTERVAL_SECONDS": "0.2",
                "FORGEA_GH_WORKER__BACKOFF_BASE_SECONDS": "0.05",
                "FORGEA_GH_WORKER__BACKOFF_MAX_SECONDS": "0.2",
                "FORGEA_GH_WORKER__CONCURRENCY": str(WORKER_CONCURRENCY),
                "FORGEA_GH_SERVER__SHUTDOWN_GRACE_SECONDS": "5",
                "FORGEA_GH_LOG__LEVEL": "warning",
                "FORGEA_GH_LOG__FORMAT": "console",
            }
        )
        command = [sys.executable, "-m", "forgea_gh", "serve", "--role", self.role]
        with self.log.open("ab") as out:
            out.write(f"==== {self.role} daemon on port {self.port} ====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    def running(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None, "the daemon was not started"
        return self.proc

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        proc = self.running()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the daemon exited with {proc.returncode} before it was ready")
            with contextlib.suppress(httpx.TransportError):
                response = await client.get(f"{self.base_url}/readyz", timeout=2.0)
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.05)
        pytest.fail(f"the daemon was not ready within {READY_TIMEOUT}s")

    def freeze(self) -> None:
        """SIGSTOP, and wait until every thread has stopped: it commits nothing more."""
        pid = self.running().pid
        os.kill(pid, signal.SIGSTOP)
        _, status = os.waitpid(pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"the daemon did not stop but ended: status {status}"

    def thaw(self) -> None:
        os.kill(self.running().pid, signal.SIGCONT)

    def kill9(self) -> None:
        proc = self.running()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=STOP_TIMEOUT) == -signal.SIGKILL

    def cleanup(self) -> None:
        """Never leave a process behind, whatever happened (SIGKILL ends a frozen one too)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def log_shown_on_failure(log: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        text = log.read_text(errors="replace") if log.exists() else "(nothing)"
        print(f"\n---- daemon output ({log}) ----\n{text}---- end of daemon output ----")
        raise


# -- the database, from outside ------------------------------------------------


@contextlib.contextmanager
def open_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection for SELECTs only."""
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def job_counts(conn: sqlite3.Connection) -> Counter[str]:
    rows = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    return Counter({status: n for status, n in rows})


# -- sending -------------------------------------------------------------------


@dataclass
class Sent:
    acked: set[str] = field(default_factory=set)  # GUIDs answered 2xx
    unanswered: int = 0  # transport errors: never acknowledged
    other: Counter[int] = field(default_factory=Counter)  # any other status code


async def send(client: httpx.AsyncClient, url: str, guids: list[str], sent: Sent) -> None:
    """POST one signed push delivery per GUID, SEND_CONCURRENCY at a time, into `sent`."""
    body = push_body()
    gate = asyncio.Semaphore(SEND_CONCURRENCY)

    async def one(guid: str) -> None:
        async with gate:
            try:
                response = await client.post(
                    url, content=body, headers=signed_headers(body, "push", guid=guid)
                )
            except httpx.TransportError:
                sent.unanswered += 1
                return
            if response.status_code in (200, 202):
                sent.acked.add(guid)
            else:
                sent.other[response.status_code] += 1

    await asyncio.gather(*(one(g) for g in guids))


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run `work` as a task for the block; never leave it running after."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def new_guids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


# -- the test ------------------------------------------------------------------


async def test_kill_9_while_processing_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "forgea.db"
    log = tmp_path / "daemons.log"
    receiver = Daemon(db, log, role="receiver")
    victim = Daemon(db, log)
    survivor = Daemon(db, log)
    started = time.monotonic()

    with log_shown_on_failure(log):
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                # 1. A backlog: deliveries stored by a receiver-only daemon.
                receiver.start()
                await receiver.wait_ready(client)
                backlog = Sent()
                await send(client, receiver.webhook_url, new_guids(BACKLOG), backlog)
                assert len(backlog.acked) == BACKLOG, backlog
                receiver.kill9()
                with open_db(db) as conn:
                    assert job_counts(conn) == Counter(pending=BACKLOG)

                # 2. The full daemon works through it while more deliveries pour in.
                victim.start()
                await victim.wait_ready(client)
                live = Sent()
                live_sends = send(client, victim.webhook_url, new_guids(LIVE), live)
                async with in_background(live_sends) as sender:
                    # 3. kill -9 mid-work: jobs done, jobs leased, jobs waiting, and
                    #    requests in flight. The daemon is frozen (SIGSTOP) while its
                    #    committed state is checked, so the state seen is the state
                    #    it dies in; if the moment was wrong, it thaws and goes on.
                    with open_db(db) as conn:
                        deadline = time.monotonic() + KILL_TIMEOUT
                        while True:
                            counts = job_counts(conn)
                            if (
                                counts["completed"] >= MIN_COMPLETED_BEFORE_KILL
                                and len(live.acked) >= MIN_LIVE_ACKED_BEFORE_KILL
                                and counts["processing"] > 0
                                and counts["pending"] > 0
                            ):
                                victim.freeze()
                                counts = job_counts(conn)
                                if counts["processing"] > 0 and counts["pending"] > 0:
                                    break
                                victim.thaw()
                            assert not sender.done(), f"every send was answered first: {counts}"
                            assert time.monotonic() < deadline, f"never mid-work: {counts}"
                            await asyncio.sleep(0.002)
                        victim.kill9()
                    await asyncio.wait_for(sender, timeout=30.0)

                with open_db(db) as conn:
                    at_kill = job_counts(conn)
                    leased_at_kill = {
                        job_id
                        for (job_id,) in conn.execute(
                            "SELECT id FROM jobs WHERE status = 'processing'"
                        )
                    }
                acked = backlog.acked | live.acked
                print(
                    f"\nat the kill: jobs {dict(at_kill)}; {len(live.acked)} of {LIVE} live "
                    f"deliveries acknowledged, {live.unanswered} unanswered"
                )
                assert not live.other, f"unexpected answers before the kill: {live.other}"
                assert live.acked, "no live delivery was acknowledged before the kill"
                assert live.unanswered, "the kill came after every send was answered"
                assert at_kill["pending"] + at_kill["failed"] > 0, f"no backlog left: {at_kill}"
                assert leased_at_kill, f"no job was leased at the kill: {at_kill}"

                # 4. Restart on the same database: it must finish everything.
                survivor.start()
                await survivor.wait_ready(client)
                with open_db(db) as conn:
                    deadline = time.monotonic() + DRAIN_TIMEOUT
                    while True:
                        counts = job_counts(conn)
                        if not any(counts[s] for s in UNFINISHED):
                            break
                        assert time.monotonic() < deadline, (
                            f"not drained {DRAIN_TIMEOUT}s after the restart: {counts}"
                        )
                        await asyncio.sleep(0.1)

                    # 5. Nothing acknowledged is lost, nothing doubled, all done.
                    stored = {guid for (guid,) in conn.execute("SELECT guid FROM deliveries")}
                    lost = acked - stored
                    assert not lost, f"{len(lost)} acknowledged deliveries lost, e.g. {min(lost)}"
                    not_one_job = conn.execute(
                        "SELECT d.guid, count(j.id) FROM deliveries AS d "
                        "LEFT JOIN jobs AS j ON j.delivery_id = d.id "
                        "GROUP BY d.id HAVING count(j.id) <> 1 LIMIT 5"
                    ).fetchall()
                    assert not not_one_job, f"deliveries without exactly one job: {not_one_job}"
                    counts = job_counts(conn)
                    assert counts == Counter(completed=len(stored)), counts

                    # 6. Leased work was rescued (an attempt spent) and completed.
                    rows = conn.execute(
                        "SELECT j.id, j.status, j.attempts, "
                        "  (SELECT count(*) FROM job_errors AS e "
                        "   WHERE e.job_id = j.id AND e.error_class = 'LeaseExpired') "
                        "FROM jobs AS j WHERE j.id IN (SELECT value FROM json_each(?))",
                        (str(sorted(leased_at_kill)),),
                    ).fetchall()
                    assert len(rows) == len(leased_at_kill)
                    for job_id, status, attempts, lease_errors in rows:
                        assert status == "completed", (job_id, status)
                        assert attempts >= 2, f"job {job_id}: {attempts} attempt(s)"
                        assert lease_errors >= 1, f"job {job_id}: no LeaseExpired error"
                    other_errors = conn.execute(
                        "SELECT job_id, error_class, message FROM job_errors "
                        "WHERE error_class <> 'LeaseExpired' LIMIT 5"
                    ).fetchall()
                    assert not other_errors, f"jobs failed for another reason: {other_errors}"

                # 7. SIGTERM stops the restarted daemon cleanly.
                proc = survivor.running()
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=STOP_TIMEOUT)
                # The lifespan closed the store: the last connection to close
                # checkpoints the WAL into the database file and removes it.
                assert not Path(f"{db}-wal").exists(), "the store was not closed on SIGTERM"
                assert code == 0, f"SIGTERM: exit status {code}, expected 0"
                print(
                    f"{len(leased_at_kill)} job(s) leased at the kill were rescued and "
                    f"completed; {len(acked)} acknowledged of {len(stored)} stored deliveries; "
                    f"{time.monotonic() - started:.1f}s"
                )
        finally:
            for daemon in (receiver, victim, survivor):
                daemon.cleanup()
