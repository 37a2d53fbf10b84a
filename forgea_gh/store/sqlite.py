"""The embedded SQLite store (the default backend).

One writer connection and one reader connection per process (WAL lets reads
run beside the writer). Every write is one `BEGIN IMMEDIATE ... COMMIT`
under an asyncio lock, so statements of two coroutines never interleave in
one transaction, and it runs as a shielded task, so a cancelled caller never
leaves a transaction half-open. Ingest goes through a group-commit writer
task: concurrent deliveries share one transaction and one fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from forgea_gh import errors, jobs, timeutil, webhook
from forgea_gh.store import base, labs_sqlite, queries, schema

log = logging.getLogger(__name__)

Q = queries.load("sqlite.sql")
T = TypeVar("T")
Work = Callable[[aiosqlite.Connection], Awaitable[T]]

# Deliveries committed together at most. Large enough to absorb a burst,
# small enough that one transaction stays a few milliseconds.
MAX_BATCH = 256
PRUNE_CHUNK = 1000
CHECKPOINT_SECONDS = 1.0
CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024  # SQLite's default: 1000 pages of 4 KiB

# A delivery waiting for the group commit: its key, its row values (built on
# the event loop, so the writer thread needs the GIL as little as possible),
# and the future its request awaits.
_Pending = tuple[tuple[str, int], tuple[Any, ...], "asyncio.Future[jobs.EnqueueResult]"]


class SqliteStore:
    backend = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
        max_attempts: int | None = None,
    ) -> None:
        """`max_attempts`, when given, becomes the attempt budget the
        deliveries_enqueue trigger gives new webhook jobs. It is kept in the
        file, so only a daemon that receives webhooks sets it: a CLI command
        run with another config must not change the daemon's budget.
        """
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.max_attempts = max_attempts
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._ingest: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._ingest_task: asyncio.Task[None] | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(self._prepare_file)
            self._writer = await self._connect()
            self._reader = await self._connect()
            self._checkpointer = await self._connect()
            # Checkpoints run on their own connection and thread (below), so a
            # commit never stops to copy the WAL into the database file.
            await self._writer.execute("PRAGMA wal_autocheckpoint=0")
            if self.max_attempts is not None:
                await self._writer.execute(
                    "UPDATE queue_settings SET webhook_max_attempts = ?"
                    " WHERE id = 1 AND webhook_max_attempts <> ?",
                    (self.max_attempts, self.max_attempts),
                )
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise errors.StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise
        self._ingest_task = asyncio.create_task(self._ingest_loop(), name="forgea-ingest-writer")
        self._checkpoint_task = asyncio.create_task(
            self._checkpoint_loop(), name="forgea-wal-checkpoint"
        )

    async def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database file in the background, once a second.

        PASSIVE never blocks the writer or readers; it copies what no reader
        still needs, and the writer restarts the WAL once all of it is copied.
        """
        wal = Path(f"{self.path}-wal")
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                # As SQLite's own autocheckpoint: only once the WAL is big
                # enough to be worth an fsync of the database file, which
                # would otherwise slow the commits of a quiet daemon.
                if not wal.exists() or wal.stat().st_size < CHECKPOINT_WAL_BYTES:
                    continue
                await self._require(self._checkpointer).execute("PRAGMA wal_checkpoint(PASSIVE)")
            except (sqlite3.Error, errors.StoreError, OSError) as exc:
                log.warning("WAL checkpoint failed (will retry): %s", exc)

    def _prepare_file(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
        try:
            _use_wal(conn, self.busy_timeout_ms / 1000)
            applied = schema.ensure(conn)
            if applied.before != applied.after:
                log.info(
                    "database schema at version %d (was %d): %s",
                    applied.after,
                    applied.before,
                    self.path,
                )
        finally:
            conn.close()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # Per-connection settings: they do not persist in the file.
        await conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    async def close(self) -> None:
        """Commit what was handed to the ingest writer, then close both connections."""
        self._closing = True
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            await asyncio.gather(self._checkpoint_task, return_exceptions=True)
            self._checkpoint_task = None
        if self._ingest_task is not None:
            self._ingest.put_nowait(None)
            await self._ingest_task
            self._ingest_task = None
        for conn in (self._writer, self._reader, self._checkpointer):
            if conn is not None:
                await conn.close()
        self._writer = self._reader = self._checkpointer = None

    async def ping(self) -> None:
        await self._fetch("SELECT 1", {})

    async def commit_marker(self) -> int:
        # Read on the writer: data_version moves with the commits of every
        # other connection and process, never with the connection's own, so
        # this store's claims and completions do not wake its own processor.
        db = self._require(self._writer)
        try:
            rows = list(await db.execute_fetchall("PRAGMA data_version"))
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        return int(rows[0][0])

    # -- transactions ------------------------------------------------------

    async def _write(self, work: Work[T]) -> T:
        task = asyncio.ensure_future(self._run_write(work))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The transaction finishes (commit or rollback) on its own; its
            # outcome is not wanted any more.
            task.add_done_callback(_retrieve)
            raise

    async def _run_write(self, work: Work[T]) -> T:
        async with self._write_lock:
            db = self._require(self._writer)
            try:
                await db.execute("BEGIN IMMEDIATE")
                result = await work(db)
                await db.execute("COMMIT")
                return result
            except BaseException as exc:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc) from exc
                raise

    async def _fetch(self, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
        db = self._require(self._reader)
        try:
            return list(await db.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    def _require(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None or (self._closing and conn is not self._writer):
            raise errors.StoreError("the store is closed")
        return conn

    # -- ingest (group commit) ---------------------------------------------

    async def enqueue_delivery(
        self, delivery: webhook.Delivery, now: datetime
    ) -> jobs.EnqueueResult:
        if self._closing or self._ingest_task is None or self._ingest_task.done():
            raise errors.StoreError("the store is closed")
        future: asyncio.Future[jobs.EnqueueResult] = asyncio.get_running_loop().create_future()
        row = (
            delivery.guid, delivery.hook_id, delivery.event, delivery.action,
            delivery.installation_id, delivery.repository_id,
            orjson.dumps(delivery.headers).decode(), delivery.content_type, delivery.body,
            delivery.body_sha256, delivery.signature_mode, timeutil.to_text(now),
        )  # fmt: skip
        self._ingest.put_nowait(((delivery.guid, delivery.hook_id), row, future))
        return await future

    async def _ingest_loop(self) -> None:
        stop = False
        while not stop:
            first = await self._ingest.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH and not self._ingest.empty():
                item = self._ingest.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            results = await self._write_in_thread(functools.partial(_ingest, batch=batch))
        except errors.RuleViolation as exc:
            if len(batch) > 1:
                # One row the schema refuses must not fail its neighbours.
                for item in batch:
                    await self._commit_batch([item])
                return
            _settle(batch[0][2], exc=exc)
            return
        except errors.StoreError as exc:
            for _, _, future in batch:
                _settle(future, exc=exc)
            return
        except asyncio.CancelledError:
            for _, _, future in batch:
                _settle(future, exc=errors.StoreError("the store is closing"))
            raise
        except Exception as exc:
            # A bug (or a value SQLite cannot take): this batch is answered
            # 503, and the writer goes on with the next one. It must never
            # stop, or every later request would wait forever.
            log.exception("ingest of a batch of %d failed", len(batch))
            for _, _, future in batch:
                _settle(future, exc=errors.StoreError(f"ingest failed: {exc!r}"))
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if isinstance(result, errors.StoreError):
                _settle(future, exc=result)
            else:
                _settle(future, result=result)

    async def _write_in_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` (which makes its own transactions) in ONE trip to the writer's thread.

        The ingest path's lever: every await on aiosqlite is a thread hop
        that must win the GIL back from a busy event loop, so a batch is one
        synchronous function on the writer connection (under the same write
        lock as every other write) instead of awaited statements. It is
        awaited directly, not through a new task, so the next batch reaches
        the writer before the event loop turns to answering the last one.
        No shield is needed: aiosqlite's one thread runs the function to its
        end even if this coroutine is cancelled, and runs nothing in between.
        """
        async with self._write_lock:
            db = self._require(self._writer)
            try:
                # aiosqlite runs callables on its connection's own thread, in
                # order with every other statement of this connection.
                result: T = await db._execute(work, db._conn)  # type: ignore[no-untyped-call]
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
        return result

    # -- the job engine ----------------------------------------------------

    async def claim_due(
        self, worker_id: str, limit: int, now: datetime, lease_seconds: float
    ) -> list[jobs.ClaimedJob]:
        stamp = timeutil.to_text(now)
        until = timeutil.to_text(timeutil.later(now, lease_seconds))

        async def work(db: aiosqlite.Connection) -> list[jobs.ClaimedJob]:
            rows = await db.execute_fetchall(
                Q["claim_due"], {"worker": worker_id, "until": until, "now": stamp, "limit": limit}
            )
            claimed = sorted((jobs.Job.from_row(r) for r in rows), key=lambda j: j.id)
            wanted = [j.delivery_id for j in claimed if j.delivery_id is not None]
            deliveries: dict[int, jobs.StoredDelivery] = {}
            if wanted:
                found = await db.execute_fetchall(
                    Q["deliveries_by_ids"], {"ids": orjson.dumps(wanted)}
                )
                deliveries = {r["id"]: jobs.StoredDelivery.from_row(r) for r in found}
            return [
                jobs.ClaimedJob(j, deliveries.get(j.delivery_id) if j.delivery_id else None)
                for j in claimed
            ]

        return await self._write(work)

    async def complete(self, job_id: int, worker_id: str, now: datetime, outcome: str) -> bool:
        params = {
            "job_id": job_id,
            "worker": worker_id,
            "now": timeutil.to_text(now),
            "outcome": outcome,
        }

        async def work(db: aiosqlite.Connection) -> bool:
            cursor = await db.execute(Q["complete_job"], params)
            return cursor.rowcount == 1

        return await self._write(work)

    async def fail(self, job_id: int, worker_id: str, now: datetime, failure: jobs.Failure) -> bool:
        stamp = timeutil.to_text(now)
        params = {
            "job_id": job_id,
            "worker": worker_id,
            "now": stamp,
            "error_class": failure.error_class,
            "message": failure.message,
            "retry_at": failure.retry_at,
        }

        async def work(db: aiosqlite.Connection) -> bool:
            await db.execute(Q["insert_job_error"], params)
            rows = list(await db.execute_fetchall(Q["fail_job"], params))
            if not rows:
                return False
            if rows[0]["status"] == jobs.JobStatus.DEAD_LETTER:
                await _audit_dead_letter(db, stamp, "processor", rows[0], failure.message)
            return True

        return await self._write(work)

    async def extend_leases(
        self, job_ids: list[int], worker_id: str, now: datetime, lease_seconds: float
    ) -> int:
        params = {
            "ids": orjson.dumps(job_ids).decode(),
            "worker": worker_id,
            "now": timeutil.to_text(now),
            "until": timeutil.to_text(timeutil.later(now, lease_seconds)),
        }

        async def work(db: aiosqlite.Connection) -> int:
            return (await db.execute(Q["extend_leases"], params)).rowcount

        return await self._write(work) if job_ids else 0

    async def release_worker(self, worker_id: str, now: datetime) -> int:
        params = {"worker": worker_id, "now": timeutil.to_text(now)}

        async def work(db: aiosqlite.Connection) -> int:
            return (await db.execute(Q["release_worker"], params)).rowcount

        return await self._write(work)

    async def rescue_expired(
        self, now: datetime, decide: base.RescueDecision
    ) -> list[base.Rescued]:
        stamp = timeutil.to_text(now)

        async def work(db: aiosqlite.Connection) -> list[base.Rescued]:
            rescued: list[base.Rescued] = []
            for row in await db.execute_fetchall(Q["expired_leases"], {"now": stamp}):
                retry_at = decide(row["attempts"], row["max_attempts"])
                message = f"lease held by {row['locked_by']} expired at {row['locked_until']}"
                params = {
                    "job_id": row["id"],
                    "attempt": row["attempts"],
                    "message": message,
                    "now": stamp,
                    "retry_at": timeutil.to_text(retry_at) if retry_at is not None else None,
                }
                await db.execute(Q["insert_rescue_error"], params)
                await db.execute(Q["end_expired_lease"], params)
                if retry_at is None:
                    await _audit_dead_letter(db, stamp, "processor", row, message)
                rescued.append(base.Rescued(row["id"], row["attempts"], retry_at is None))
            return rescued

        return await self._write(work)

    async def replay(
        self, selector: base.ReplaySelector, now: datetime, actor: str
    ) -> list[base.Replayed]:
        stamp = timeutil.to_text(now)

        async def work(db: aiosqlite.Connection) -> list[base.Replayed]:
            if selector.job_id is not None:
                rows = list(await db.execute_fetchall(Q["job_by_id"], {"job_id": selector.job_id}))
                if not rows:
                    raise errors.NotFoundError(f"no job {selector.job_id}")
                if rows[0]["status"] not in (jobs.JobStatus.FAILED, jobs.JobStatus.DEAD_LETTER):
                    raise errors.ConflictError(
                        f"job {selector.job_id} is {rows[0]['status']}: only failed and "
                        "dead-lettered jobs are replayed"
                    )
            elif selector.guid is not None:
                rows = list(
                    await db.execute_fetchall(Q["replayable_by_guid"], {"guid": selector.guid})
                )
            elif selector.all_dead:
                rows = list(
                    await db.execute_fetchall(Q["dead_by_event"], {"event": selector.event})
                )
            else:
                raise ValueError("a replay selects by guid, job id or all dead letters")
            replayed = []
            for row in rows:
                await db.execute(Q["replay_job"], {"job_id": row["id"], "now": stamp})
                await _audit(
                    db,
                    stamp,
                    actor=actor,
                    action="job.replayed",
                    subject=("job", row["id"]),
                    guid=row["guid"],
                    detail={"previous_status": row["status"]},
                )
                replayed.append(base.Replayed(row["id"], row["status"]))
            return replayed

        return await self._write(work)

    # -- units of work -----------------------------------------------------

    async def transaction(self, work: Callable[[base.LabTx], Awaitable[T]]) -> T:
        stamp = timeutil.to_text(timeutil.utcnow())
        return await self._write(lambda db: work(labs_sqlite.SqliteLabTx(db, stamp)))

    async def read(self, work: Callable[[base.LabTx], Awaitable[T]]) -> T:
        stamp = timeutil.to_text(timeutil.utcnow())
        async with self._read_lock:
            db = self._require(self._reader)
            try:
                await db.execute("BEGIN")  # one snapshot for every statement of `work`
                try:
                    return await work(labs_sqlite.SqliteLabTx(db, stamp))
                finally:
                    await db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _translate(exc) from exc

    async def complete_in(
        self,
        job_id: int,
        worker_id: str,
        now: datetime,
        work: Callable[[base.LabTx], Awaitable[str]],
    ) -> bool:
        stamp = timeutil.to_text(now)
        params = {"job_id": job_id, "worker": worker_id, "now": stamp}

        async def unit(db: aiosqlite.Connection) -> bool:
            held = await db.execute_fetchall(Q["lease_held"], params)
            if not list(held):
                return False
            outcome = await work(labs_sqlite.SqliteLabTx(db, stamp))
            await db.execute(Q["complete_job"], params | {"outcome": outcome[:200]})
            return True

        return await self._write(unit)

    # -- reading -----------------------------------------------------------

    async def status_summary(self, now: datetime) -> base.StatusSummary:
        async with self._read_lock:
            counts_rows = await self._fetch(Q["count_jobs"], {})
            oldest = (await self._fetch(Q["oldest_waiting"], {}))[0]["oldest"]
            last = (await self._fetch(Q["last_completed"], {}))[0]["last"]
            asked = (await self._fetch(labs_sqlite.Q["redelivery_counts"], {}))[0]
        counts: dict[str, dict[str, int]] = {s.value: {} for s in jobs.JobStatus}
        for row in counts_rows:
            counts.setdefault(row["status"], {})[row["kind"]] = row["n"]
        age = None
        if oldest is not None:
            age = max(0.0, (now - timeutil.from_text(oldest)).total_seconds())
        redelivery = {
            "requested": asked["requested"] or 0,
            "failed": asked["failed"] or 0,
            "last_requested_at": asked["last"],
        }
        return base.StatusSummary(self.backend, counts, age, last, redelivery)

    async def dead_letters(
        self, filters: base.DeadLetterFilter, cursor: str | None, limit: int
    ) -> base.DeadLetterPage:
        before = _decode_cursor(cursor)
        rows = await self._fetch(
            Q["list_dead_letters"],
            {
                "kind": filters.kind,
                "event": filters.event,
                "action": filters.action,
                "guid": filters.guid,
                "before": before,
                "limit": limit + 1,
            },
        )
        items = [_dead_letter_item(r) for r in rows[:limit]]
        next_cursor = str(rows[limit - 1]["id"]) if len(rows) > limit else None
        return base.DeadLetterPage(items, next_cursor)

    async def dead_letter(self, job_id: int, include_payload: bool) -> dict[str, Any]:
        async with self._read_lock:
            rows = await self._fetch(Q["get_dead_letter"], {"job_id": job_id})
            history = await self._fetch(Q["job_errors"], {"job_id": job_id})
        if not rows:
            raise errors.NotFoundError(f"no job {job_id}")
        row = rows[0]
        if row["status"] != jobs.JobStatus.DEAD_LETTER:
            raise errors.NotFoundError(f"job {job_id} is not dead-lettered (it is {row['status']})")
        item = _dead_letter_item(row)
        item["errors"] = [dict(h) for h in history]
        if include_payload:
            item["payload"] = _payload_of(row)
            item["headers"] = orjson.loads(row["headers"]) if row["headers"] else None
        return item

    # -- maintenance -------------------------------------------------------

    async def prune_completed(self, older_than: datetime) -> base.PruneResult:
        params = {"before": timeutil.to_text(older_than), "chunk": PRUNE_CHUNK}
        pruned_jobs = pruned_deliveries = 0

        async def chunk(db: aiosqlite.Connection) -> tuple[int, int]:
            j = (await db.execute(Q["prune_jobs"], params)).rowcount
            d = (await db.execute(Q["prune_deliveries"], params)).rowcount
            return j, d

        # Small transactions: a large prune never holds the write lock for long.
        while True:
            j, d = await self._write(chunk)
            pruned_jobs += j
            pruned_deliveries += d
            if j < PRUNE_CHUNK and d < PRUNE_CHUNK:
                break
        if pruned_jobs or pruned_deliveries:
            detail = {
                "jobs": pruned_jobs,
                "deliveries": pruned_deliveries,
                "completed_before": params["before"],
            }
            stamp = timeutil.to_text(timeutil.utcnow())
            await self._write(
                lambda db: _audit(
                    db,
                    stamp,
                    actor="retention",
                    action="retention.pruned",
                    subject=None,
                    guid=None,
                    detail=detail,
                )
            )
        return base.PruneResult(pruned_jobs, pruned_deliveries)

    async def check(self) -> base.CheckReport:
        async with self._read_lock:
            version = (await self._fetch("PRAGMA user_version", {}))[0][0]
            journal = (await self._fetch("PRAGMA journal_mode", {}))[0][0]
            integrity = [r[0] for r in await self._fetch("PRAGMA quick_check", {})]
            foreign = await self._fetch("PRAGMA foreign_key_check", {})
        report = base.CheckReport(self.backend, version, schema.SCHEMA_VERSION)
        report.facts = {"path": self.path, "journal_mode": journal, "synchronous": self.synchronous}
        if version != schema.SCHEMA_VERSION:
            report.problems.append(f"schema version {version}, expected {schema.SCHEMA_VERSION}")
        if journal.lower() != "wal":
            report.problems.append(f"journal_mode is {journal}, expected wal")
        if integrity != ["ok"]:
            report.problems.extend(f"integrity: {line}" for line in integrity)
        if foreign:
            report.problems.append(f"{len(foreign)} rows violate foreign keys")
        return report


_DELIVERY_COLUMNS = (
    "guid, hook_id, event, action, installation_id, repository_id, headers, content_type,"
    " body, body_sha256, signature_mode, received_at"
)


def _ingest(
    conn: sqlite3.Connection, *, batch: list[_Pending]
) -> list[jobs.EnqueueResult | errors.StoreError]:
    """Store a batch of deliveries and their webhook jobs (runs in the writer thread).

    ONE statement, in autocommit mode, is the whole transaction: a
    multi-row INSERT whose deliveries_enqueue trigger adds each new
    delivery's job, and whose end commits (one fsync). Each statement hands
    the GIL back and forth with the busy event loop, so fewer is faster. A
    key stored before is skipped by ON CONFLICT; rowids of one INSERT are
    consecutive, so the new ids follow from `lastrowid` and the row count.
    Only when keys were skipped does a lookup tell duplicates from dead
    letters to revive.
    """
    new: dict[tuple[str, int], tuple[Any, ...]] = {}
    for key, row, _ in batch:
        new.setdefault(key, row)
    cursor = conn.execute(
        _insert_deliveries_sql(len(new)), [value for row in new.values() for value in row]
    )
    count, last = cursor.rowcount, cursor.lastrowid or 0
    created: dict[tuple[str, int], tuple[int, int]] = {}
    if count:
        first = last - count + 1
        if count == len(new):
            delivery_ids = dict(zip(new, range(first, last + 1), strict=True))
        else:
            found = conn.execute(
                "SELECT id, guid, hook_id FROM deliveries WHERE id BETWEEN ? AND ?", (first, last)
            ).fetchall()
            delivery_ids = {(r[1], r[2]): r[0] for r in found}
        # The trigger made the jobs in delivery order, within one statement
        # holding the write lock: their ids are consecutive too.
        first_job, last_job = conn.execute(Q["webhook_job_range"], (first, last)).fetchone()
        if last_job - first_job + 1 != count:
            raise errors.StoreError(
                f"expected {count} webhook jobs, found ids {first_job}..{last_job}"
            )
        ordered = sorted(delivery_ids.items(), key=lambda item: item[1])
        for offset, (key, delivery_id) in enumerate(ordered):
            created[key] = (first_job + offset, delivery_id)

    known: dict[tuple[str, int], sqlite3.Row] = {}
    revived: set[tuple[str, int]] = set()
    skipped = [list(k) for k in new if k not in created]
    if skipped:
        known, revived = _look_up_and_revive(conn, skipped, new)

    results: list[jobs.EnqueueResult | errors.StoreError] = []
    answered: set[tuple[str, int]] = set()
    for key, _, _ in batch:
        first_time = key not in answered
        answered.add(key)
        if key in created:
            job_id, delivery_id = created[key]
            outcome = jobs.Enqueued.STORED if first_time else jobs.Enqueued.DUPLICATE
        elif key in known:
            found_row = known[key]
            job_id, delivery_id = found_row[4], found_row[0]
            outcome = (
                jobs.Enqueued.REVIVED if key in revived and first_time else jobs.Enqueued.DUPLICATE
            )
        else:
            # Stored before, but pruned between our INSERT and the lookup (another
            # process's retention): not stored now either, so say so; GitHub's
            # redelivery will store it afresh.
            results.append(errors.StoreError(f"delivery {key[0]} changed while being stored"))
            continue
        results.append(jobs.EnqueueResult(outcome, job_id, delivery_id))
    return results


def _look_up_and_revive(
    conn: sqlite3.Connection,
    skipped: list[list[Any]],
    new: dict[tuple[str, int], tuple[Any, ...]],
) -> tuple[dict[tuple[str, int], sqlite3.Row], set[tuple[str, int]]]:
    """For keys stored before: their rows; dead-lettered jobs go back to pending (audited).

    One transaction, so what is looked up is what is revived.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute(Q["find_deliveries"], {"keys": orjson.dumps(skipped)}).fetchall()
        known = {(r[1], r[2]): r for r in found}
        revived: set[tuple[str, int]] = set()
        for key, stored in known.items():
            if stored[5] != jobs.JobStatus.DEAD_LETTER:
                continue
            stamp = new[key][11]
            if conn.execute(Q["revive_job"], {"job_id": stored[4], "now": stamp}).rowcount != 1:
                continue
            conn.execute(
                Q["insert_audit"],
                {
                    "occurred_at": stamp, "actor": "receiver", "action": "job.revived",
                    "subject_type": "job", "subject_id": str(stored[4]), "delivery_guid": key[0],
                    "detail": '{"reason":"delivery received again while dead-lettered"}',
                },
            )  # fmt: skip
            revived.add(key)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return known, revived


@functools.lru_cache(maxsize=MAX_BATCH)
def _insert_deliveries_sql(rows: int) -> str:
    placeholders = "(" + ", ".join("?" * 12) + ")"
    return (
        f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES {', '.join([placeholders] * rows)}"
        " ON CONFLICT (guid, hook_id) DO NOTHING"
    )


def _use_wal(conn: sqlite3.Connection, patience: float) -> None:
    """Put the file in WAL mode (it persists in the file; readers never block the writer).

    Switching needs the file to itself and SQLite does not wait for that, so
    two daemons starting at once on a new file take turns here instead of
    one failing with "database is locked".
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


async def _audit(
    db: aiosqlite.Connection,
    stamp: str,
    *,
    actor: str,
    action: str,
    subject: tuple[str, int | str] | None,
    guid: str | None,
    detail: dict[str, Any],
) -> None:
    await db.execute(
        Q["insert_audit"],
        {
            "occurred_at": stamp,
            "actor": actor,
            "action": action,
            "subject_type": subject[0] if subject else None,
            "subject_id": str(subject[1]) if subject else None,
            "delivery_guid": guid,
            "detail": orjson.dumps(detail).decode(),
        },
    )


async def _audit_dead_letter(
    db: aiosqlite.Connection, stamp: str, actor: str, job: sqlite3.Row, message: str
) -> None:
    guid = None
    if job["delivery_id"] is not None:
        found = list(
            await db.execute_fetchall(Q["guid_of_delivery"], {"delivery_id": job["delivery_id"]})
        )
        guid = found[0]["guid"] if found else None
    await _audit(
        db,
        stamp,
        actor=actor,
        action="job.dead_lettered",
        subject=("job", job["id"]),
        guid=guid,
        detail={"kind": job["kind"], "attempts": job["attempts"], "error": message},
    )


def _dead_letter_item(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "guid": row["guid"],
        "hook_id": row["hook_id"],
        "event": row["event"],
        "action": row["action"],
        "installation_id": row["installation_id"],
        "repository_id": row["repository_id"],
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "last_error": row["last_error"],
        "received_at": row["received_at"],
        "created_at": row["created_at"],
        "dead_lettered_at": row["dead_lettered_at"],
    }


def _payload_of(row: sqlite3.Row) -> Any:
    if row["body"] is not None:
        try:
            return webhook.decode_payload(row["content_type"], bytes(row["body"]))
        except errors.BadDeliveryError:
            # Shown as text: the operator needs to see what could not be parsed.
            return bytes(row["body"]).decode("utf-8", "replace")
    if row["job_payload"] is not None:
        return orjson.loads(row["job_payload"])
    return None


def _decode_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not cursor.isdigit():
        raise errors.BadRequestError(f"invalid cursor {cursor!r}")
    return int(cursor)


def _settle(
    future: asyncio.Future[jobs.EnqueueResult],
    *,
    result: jobs.EnqueueResult | None = None,
    exc: BaseException | None = None,
) -> None:
    # The request may have gone away (client disconnect): its row is stored
    # all the same, and a GitHub redelivery will be answered as a duplicate.
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    elif result is not None:
        future.set_result(result)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a write whose caller was cancelled failed: %s", task.exception())


def _translate(exc: sqlite3.Error) -> errors.StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        # Triggers (RAISE(ABORT, ...)), CHECK, UNIQUE and FOREIGN KEY refusals.
        return errors.RuleViolation(str(exc))
    return errors.StoreError(f"SQLite: {exc}")
