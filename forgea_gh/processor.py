"""The job loop: claim due jobs, run their handlers, record what happened.

Each claimed job, leased, ends in exactly one commit: completed,
failed-and-rescheduled (`RetryPolicy`), or dead-lettered. `run_once` claims
and runs one round of up to `concurrency` jobs (tests step with it);
`run_forever`, the daemon's loop, keeps up to `concurrency` jobs running and
refills a slot as soon as its job ends. It claims whenever something wakes
it: a finished job; the receiver in this process after each stored
delivery; any commit to the store by another process (a receiver started
with `--role receiver`, a `replay`), seen by polling the store's commit
marker; and the scheduler's tick (the fallback, which also rescues expired
leases).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import uuid
from collections.abc import Callable
from datetime import datetime

from forgea_gh import errors, jobs, retry, timeutil
from forgea_gh.handlers import router as router_mod
from forgea_gh.store import base

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGE = 2000
# How often the processor looks for commits by other processes. One tiny
# query; 50 ms keeps a split receiver/worker well within the 100 ms a
# delivery may wait on an idle daemon.
FOLLOW_SECONDS = 0.05


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Processor:
    def __init__(
        self,
        store: base.Store,
        router: router_mod.Router,
        policy: retry.RetryPolicy,
        *,
        concurrency: int = 8,
        lease_seconds: float = 60.0,
        worker_id: str | None = None,
        clock: timeutil.Clock = timeutil.utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.router = router
        self.policy = policy
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.worker_id = worker_id or new_worker_id()
        self.clock = clock
        self.rand = rand
        self.last_processed_at: datetime | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._in_flight: set[int] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._follow_task: asyncio.Task[None] | None = None

    # -- one round ---------------------------------------------------------

    async def run_once(self) -> int:
        """Claim and process one round of due jobs; return how many were claimed."""
        if self._stopping:
            return 0
        claimed = await self.store.claim_due(
            self.worker_id, self.concurrency, self.clock(), self.lease_seconds
        )
        if claimed:
            self._in_flight.update(c.job.id for c in claimed)
            try:
                # return_exceptions: one job's failure to record its outcome
                # (a locked store) must not leave its siblings running
                # untracked, their leases no longer renewed.
                outcomes = await asyncio.gather(
                    *(self._process(c) for c in claimed), return_exceptions=True
                )
            finally:
                self._in_flight.difference_update(c.job.id for c in claimed)
            for c, outcome in zip(claimed, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    # Its lease expires and rescue retries it: nothing is lost.
                    log.error("job %d: could not record its outcome: %r", c.job.id, outcome)
        return len(claimed)

    async def _process(self, claimed: jobs.ClaimedJob) -> None:
        job = claimed.job
        route = self.router.resolve(claimed)
        try:
            if route.tx_handler is not None:
                tx_handler = route.tx_handler
                completed = await self.store.complete_in(
                    job.id, self.worker_id, self.clock(), lambda tx: tx_handler(claimed, tx)
                )
                outcome = "handled in transaction"
            else:
                assert route.handler is not None
                outcome = await route.handler(claimed)
                completed = await self.store.complete(
                    job.id, self.worker_id, self.clock(), outcome[:200]
                )
        except errors.PermanentError as exc:
            await self._record_failure(job, exc, permanent=True)
        except errors.RetryableError as exc:
            await self._record_failure(job, exc, permanent=False, retry_after=exc.retry_after)
        except asyncio.CancelledError:
            raise  # shutdown: the lease is released by stop()
        except Exception as exc:
            # A bug or an unforeseen failure: retried like a transient error,
            # with the traceback in the log for whoever fixes it.
            log.exception("job %d (%s) raised unexpectedly", job.id, job.kind)
            await self._record_failure(job, exc, permanent=False)
        else:
            if completed:
                self.last_processed_at = self.clock()
                log.debug("job %d completed: %s", job.id, outcome)
            else:
                log.warning("job %d finished after its lease was lost; outcome dropped", job.id)

    async def _record_failure(
        self,
        job: jobs.Job,
        exc: BaseException,
        *,
        permanent: bool,
        retry_after: float | None = None,
    ) -> None:
        now = self.clock()
        retry_at = (
            None
            if permanent
            else self._retry_time(job.attempts, job.max_attempts, now, retry_after)
        )
        message = (str(exc) or type(exc).__name__)[:MAX_ERROR_MESSAGE]
        failure = jobs.Failure(
            type(exc).__name__, message, timeutil.to_text(retry_at) if retry_at else None
        )
        if not await self.store.fail(job.id, self.worker_id, now, failure):
            log.warning("job %d failed after its lease was lost: %s", job.id, message)
        elif retry_at is None:
            log.error(
                "job %d (%s) dead-lettered after %d attempt(s): %s",
                job.id,
                job.kind,
                job.attempts,
                message,
            )
        else:
            log.info(
                "job %d (%s) attempt %d failed, retry at %s: %s",
                job.id,
                job.kind,
                job.attempts,
                failure.retry_at,
                message,
            )

    def _retry_time(
        self, attempts: int, max_attempts: int, now: datetime, retry_after: float | None = None
    ) -> datetime | None:
        """When to try again after `attempts` attempts, or None when none are left."""
        if self.policy.exhausted(attempts, max_attempts):
            return None
        delay = self.policy.next_delay(attempts, rand=self.rand)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return timeutil.later(now, delay)

    async def rescue_expired_leases(self) -> list[base.Rescued]:
        """End leases whose holder died: each counts as a failed attempt."""
        now = self.clock()
        rescued = await self.store.rescue_expired(
            now, lambda attempts, max_attempts: self._retry_time(attempts, max_attempts, now)
        )
        for r in rescued:
            log.warning(
                "job %d: lease expired on attempt %d, %s",
                r.job_id,
                r.attempts,
                "dead-lettered" if r.dead_lettered else "rescheduled",
            )
        return rescued

    # -- the loop ----------------------------------------------------------

    def wake(self) -> None:
        """Ask the loop to look for due work now (cheap; safe to call often)."""
        self._wakeup.set()

    async def tick(self) -> None:
        """The scheduler's fallback: renew our leases, rescue expired ones, look for work."""
        try:
            # A job that runs long (GitHub rate limits, slow answers) keeps its
            # lease while this worker lives; only a dead worker's leases expire.
            if self._in_flight:
                await self.store.extend_leases(
                    sorted(self._in_flight), self.worker_id, self.clock(), self.lease_seconds
                )
            await self.rescue_expired_leases()
        except errors.StoreError as exc:
            log.error("lease upkeep failed: %s", exc)
        self.wake()

    def start(self, follow_seconds: float | None = FOLLOW_SECONDS) -> None:
        """Run the loop; with `follow_seconds`, also wake on other processes' commits."""
        self._loop_task = asyncio.create_task(self.run_forever(), name="forgea-processor")
        if follow_seconds is not None:
            self._follow_task = asyncio.create_task(
                self.follow_commits(follow_seconds), name="forgea-follow-commits"
            )

    async def follow_commits(self, interval: float) -> None:
        """Wake the loop whenever the store's commit marker moves."""
        last: int | None = None
        failing = False
        while not self._stopping:
            marker: int | None
            try:
                marker = await self.store.commit_marker()
                failing = False
            except Exception as exc:
                # A store error or a bug: the tick still finds the work, so
                # keep going, and say (once) why wake-ups are late.
                if not failing:
                    log.warning("cannot read the store's commit marker: %r", exc)
                failing = True
                marker = last
            if last is not None and marker != last:
                self.wake()
            last = marker
            await asyncio.sleep(interval)

    async def run_forever(self) -> None:
        """Keep up to `concurrency` jobs running; a finished job's slot is refilled at once.

        Unlike rounds of `run_once`, one slow job (a long rate-limit wait, a
        slow GitHub answer) holds only its own slot, not every new delivery.
        On stop, waits for the jobs still running (stop() bounds the wait).
        """
        running: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping:
                await self._wakeup.wait()
                self._wakeup.clear()
                try:
                    while not self._stopping and len(running) < self.concurrency:
                        wanted = self.concurrency - len(running)
                        claimed = await self.store.claim_due(
                            self.worker_id, wanted, self.clock(), self.lease_seconds
                        )
                        for c in claimed:
                            running.add(self._start_job(c, running))
                        if len(claimed) < wanted:
                            break  # nothing more is due: no empty claim (a write) to find that out
                except errors.StoreError as exc:
                    # The next wake-up or tick tries again; nothing claimed is lost (leases).
                    log.error("claiming due jobs failed: %s", exc)
                except Exception:
                    # A bug must not end the loop: every later delivery would
                    # wait for a restart. Logged loudly; the next wake-up retries.
                    log.exception("claiming due jobs failed unexpectedly")
        except asyncio.CancelledError:
            # stop()'s grace ran out, wherever this loop was waiting (a claim
            # behind the write lock, or the jobs below): the jobs still
            # running are cancelled too, and stop() releases their leases.
            for job in running:
                job.cancel()
            raise
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _start_job(
        self, claimed: jobs.ClaimedJob, running: set[asyncio.Task[None]]
    ) -> asyncio.Task[None]:
        job_id = claimed.job.id
        self._in_flight.add(job_id)
        task = asyncio.create_task(self._process(claimed), name=f"forgea-job-{job_id}")

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            self._in_flight.discard(job_id)
            if not task.cancelled() and task.exception() is not None:
                # Its lease expires and rescue retries it: nothing is lost.
                log.error("job %d: could not record its outcome: %r", job_id, task.exception())
            self.wake()  # a slot is free

        task.add_done_callback(finished)
        return task

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming; let in-flight jobs finish for up to `grace_seconds`; release the rest."""
        self._stopping = True
        self._wakeup.set()
        follow, self._follow_task = self._follow_task, None
        if follow is not None:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
        task, self._loop_task = self._loop_task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace_seconds)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif task.exception() is not None:
            log.error("processor loop ended with an error: %r", task.exception())
        # Everything this worker still holds, including a claim that committed
        # while it was being cancelled, goes back to the queue.
        released = await self.store.release_worker(self.worker_id, self.clock())
        if released:
            log.warning("shutdown: released %d unfinished job(s)", released)
