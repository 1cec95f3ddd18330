"""The write side of the ledger: batched, idempotent, spooled, off the request path.

``append`` puts a record on an in-memory queue and, when the store has a
:class:`~aegis.sidecar.ledger.spool.Spool`, writes it to the local spool file
(one ``write(2)``, no ``await``), so a slow or locked database never delays an
answer and a crash or an outage loses nothing. A background task writes the queue
as one statement per batch (see :mod:`aegis.sidecar.ledger.writes`), every
``flush_interval`` seconds (0.5 on PostgreSQL, 0.01 on SQLite) or as soon as
``batch_size`` rows wait. Because every row carries its request id as the primary
key, a batch that is retried after an ambiguous failure (commit sent, answer lost)
or replayed from the spool after a restart cannot create duplicates; spool
segments are deleted once committed.

Before its first write the store reads which ledger the database is
(:mod:`.identity`) and binds its spool to it (:mod:`.binder`): rows a previous
process spooled for another ledger are held aside, never written here; the
database refuses a batch bound to another ledger too (``aegis.ledger_write``'s
third argument). :attr:`LedgerStore.replayed` is set once the rows of earlier runs
that belong here are committed.

When the database is unreachable for long, the queue stops growing at
``max_pending`` rows: with a spool, later rows stay on disk only and are read
back in order once the queue has drained ("spill"); without one, the oldest
queued rows are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from itertools import islice
from types import TracebackType
from typing import NamedTuple, Self

from .binder import SpoolBinder
from .database import Database, PostgresDatabase, SqliteDatabase, open_database
from .identity import read_identity
from .records import LedgerRecord
from .revision import prepare, warn_if_behind
from .spend import SpendBucketRow, spend_buckets, spend_by_period
from .spool import Spool, SpoolBusyError, Spooled, encode_body
from .urls import parse_url, target_of
from .writes import (
    LEDGER_MISMATCH,
    MAX_ROWS_PER_STATEMENT,
    is_permanent,
    sqlstate,
    write_postgres,
    write_sqlite,
)

__all__ = ["MAX_ROWS_PER_STATEMENT", "LedgerStore"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0
# A statement costs PostgreSQL ~0.45 ms whatever its size: a fleet of lightly loaded
# sidecars sends fewer, larger batches (the spool keeps the wait crash-safe).
SHARED_FLUSH_INTERVAL = 0.5
# SQLite's insert (two indexes and the summary trigger) costs ~25 us a row of the
# process's own core: 100 rows at once held an answer back ~3 ms (p99 at c=1 2.5 ms,
# 1.2 ms at 0.01 s), and smaller batches cost no more CPU per row in `make bench`.
SQLITE_FLUSH_INTERVAL = 0.01
_RELOAD_ROWS = 1000  # rows read back from the spool per step after a spill


class _Row(NamedTuple):
    seq: int  # spool sequence number (0 without a spool)
    record: LedgerRecord
    body: bytes  # encode_body(record, budgets): spooled, and sent to PostgreSQL as is


ChargeTo = Callable[[LedgerRecord], str]
HealthListener = Callable[[bool], None]


class LedgerStore:
    """Batched ledger writer plus the few reads the budget book needs at start."""

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 256,
        flush_interval: float | None = None,
        max_pending: int = 100_000,
        migrate: bool | None = None,
        spool: Spool | None = None,
        holder: str = "",
        charge_to: ChargeTo | None = None,
        on_health: HealthListener | None = None,
    ) -> None:
        """``migrate=None`` migrates SQLite ledgers automatically and leaves
        PostgreSQL to ``aegis ledger migrate``.

        ``holder`` names this sidecar in budget leases; ``charge_to`` says which
        budgets (comma-separated) a row with a cost is charged to; ``on_health``
        hears ``False`` when a write fails for a reason that is retried (the
        database is unreachable) and ``True`` when one succeeds again.
        """
        if not 1 <= batch_size <= MAX_ROWS_PER_STATEMENT:
            raise ValueError(f"batch_size must be 1..{MAX_ROWS_PER_STATEMENT}")
        self.url = url
        location = parse_url(url)
        self._is_sqlite = location.is_sqlite
        if flush_interval is None:
            flush_interval = SQLITE_FLUSH_INTERVAL if self._is_sqlite else SHARED_FLUSH_INTERVAL
        if flush_interval <= 0 or max_pending < batch_size:
            raise ValueError("flush_interval must be > 0 and max_pending >= batch_size")
        self._migrate = self._is_sqlite if migrate is None else migrate
        # Opened at the first statement; a database that is down at start is retried.
        self.database: Database = open_database(location)
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_pending = max_pending
        self._queue: deque[_Row] = deque()
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = self._closed = False
        self._in_flight = 0  # rows of the batch being written
        self.spool = spool
        self.holder = holder
        self.charge_to = charge_to
        self.on_health = on_health
        self.healthy = True
        self._spilled_from: int | None = None  # first spool seq not in the queue
        self._recovered_until = 0  # last seq found in the spool at start
        self._committed_seq = 0
        self.replayed = asyncio.Event()  # the spool found at start is committed
        self.binder = SpoolBinder(None, target_of(url))
        # Counters for metrics and tests.
        self.rows_written = self.duplicates_skipped = self.batches_written = 0
        self.write_errors = self.rows_dropped = self.rows_rejected = self.rows_recovered = 0

    # -- lifecycle ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Rows appended but not yet committed (for the ledger queue gauge)."""
        spilled = 0
        if self._spilled_from is not None and self.spool is not None:
            spilled = self.spool.next_seq - self._spilled_from
        return len(self._queue) + self._in_flight + spilled

    async def start(self) -> None:
        """Open the spool (queueing what a previous process left), open the
        database, migrate it if this store owns migrations, start writing."""
        if self._task is not None:
            return
        if self.spool is not None:
            try:
                recovered = self.spool.open(target=self.binder.target)
            except SpoolBusyError:
                if not self._is_sqlite:
                    raise  # two live sidecars with one identity would share leases
                log.error("ledger spool %s is in use: running without one", self.spool.directory)
                self.spool, recovered = None, []
        self.binder.spool = self.spool
        if self.spool is not None:
            self.rows_recovered = len(recovered)
            if recovered:
                self._recovered_until = recovered[-1].seq
                log.warning("ledger spool: %d rows of a previous run found", len(recovered))
            for row in recovered[: self._max_pending]:
                self._queue.append(_Row(row.seq, row.record, row.body))
            if len(recovered) > self._max_pending:
                self._spilled_from = recovered[self._max_pending].seq
            self.spool.start()
        if self._migrate:
            if not await prepare(self.database):
                from .migrate import migrate_async  # an older ledger: Alembic, this once

                await migrate_async(self.url)
        else:
            await warn_if_behind(self.database)
        self._task = asyncio.create_task(self._run(), name="aegis-ledger-writer")
        self._wake.set()  # bind (and replay) at once, rows or not

    async def aclose(self, grace: float = 10.0) -> None:
        """Write every queued row (retrying for up to ``grace`` seconds), then close.

        Rows appended while closing are still written; rows appended after close
        are counted in ``rows_dropped`` and logged, never raised to a request.
        Rows that could not be written stay in the spool for the next start.
        """
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            else:
                if self._queue:  # appended after the writer's last batch
                    with contextlib.suppress(Exception):
                        await self._drain()
        self._closed = True
        if self._queue or self._spilled_from is not None:
            kept = "kept in the spool" if self.spool is not None else "lost"
            if self.spool is None:
                self.rows_dropped += len(self._queue)
            log.error("ledger closed with %d rows unwritten (%s)", self.pending, kept)
            self._queue.clear()
        if self.spool is not None:
            if not self.pending and self._committed_seq:
                self.spool.committed(self._committed_seq, compact=True)  # clean: nothing to replay
            await self.spool.aclose()
        await self.database.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- write side --------------------------------------------------------------

    def append(self, record: LedgerRecord, charges: str | None = None) -> None:
        """Queue (and spool) one row; never awaits, never raises (request path).
        ``charges``: the budgets the row is charged to (else ``charge_to``'s answer)."""
        if self._closed:
            self.rows_dropped += 1
            log.error("ledger row %s dropped: the ledger is closed", record.request_id)
            return
        budgets = "" if charges is None or not record.cost_usd else charges
        if charges is None and self.charge_to is not None and record.cost_usd:
            budgets = self.charge_to(record)
        seq = 0
        spool = self.spool
        body = b"" if spool is None and self._is_sqlite else encode_body(record, budgets)
        if spool is not None:
            try:
                seq = spool.append(body)
            except OSError:
                # A full or broken disk must not fail the request: the row is
                # still queued in memory, as without a spool.
                log.exception("ledger spool write failed for %s", record.request_id)
            if self._spilled_from is not None and seq:
                return  # on disk only; read back once the queue has drained
        queue = self._queue
        if len(queue) >= self._max_pending:
            if spool is not None and seq:
                self._spilled_from = seq
                log.warning("ledger queue full: further rows wait in the spool only")
                return
            # The database has been failing for a long time; keep memory bounded.
            queue.popleft()
            self.rows_dropped += 1
            if self.rows_dropped == 1 or self.rows_dropped % 1000 == 0:
                log.error("ledger queue full: %d rows dropped so far", self.rows_dropped)
        queue.append(_Row(seq, record, body))
        size = len(queue)
        if size == 1 or size >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything queued now; raises if the database refuses the batch."""
        await self._drain()

    async def _bind_once(self) -> None:
        """Before the first write (write lock held; raises while unreachable): read
        the ledger's identity, bind the spool, drop rows of earlier runs held aside
        from the queue, replay held sets that belong here."""
        if self.binder.identity is not None:
            return
        identity = await read_identity(self.database, self.binder.target)
        if identity.ledger_id is None:
            log.warning("ledger has no id (schema before 0005): run `aegis ledger migrate`")
        if held := self.binder.adopt(identity):
            kept = [r for r in self._queue if not any(a <= r.seq < b for a, b in held)]
            self.rows_recovered -= len(self._queue) - len(kept)
            self._queue.clear()
            self._queue.extend(kept)
            until, spilled = self._recovered_until, self._spilled_from
            if spilled is None or spilled > until:  # else: the spill is read back later
                self._recovered_until = max((r.seq for r in kept if r.seq <= until), default=0)
        self.rows_recovered += await self.binder.replay_held(self._write_held)
        self.binder.refresh(force=True)
        if not self._recovered_until:
            self.replayed.set()

    async def _write_held(self, records: list[Spooled]) -> None:
        rows = [_Row(0, r.record, r.body) for r in records]
        for start in range(0, len(rows), self._batch_size):
            await self._write_batch(rows[start : start + self._batch_size])

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            await self._wake.wait()
            if not self._closing and 0 < len(self._queue) < self._batch_size:
                # Let a batch fill up, unless it fills (append wakes us) or we close.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
                backoff = 0.0
            except Exception:
                self.write_errors += 1
                self._set_health(False)
                backoff = min(max(backoff * 2, self._interval), _MAX_BACKOFF)
                log.exception("ledger write failed; %d rows kept for retry", self.pending)
                await asyncio.sleep(backoff)
                self._wake.set()
                continue
            if self._closing and not self._queue:
                return

    def _set_health(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            if self.on_health is not None:
                self.on_health(healthy)

    def _reload_spilled(self) -> None:
        """The queue drained after a spill: read the next rows back from the spool."""
        spool, start = self.spool, self._spilled_from
        if spool is None or start is None:
            return
        rows = list(islice(spool.rows_from(start), _RELOAD_ROWS))
        self._queue.extend(_Row(r.seq, r.record, r.body) for r in rows)
        # Rows appended while reading were not queued: keep spilling from there.
        following = rows[-1].seq + 1 if rows else start
        self._spilled_from = following if following < spool.next_seq else None

    async def _drain(self) -> None:
        async with self._write_lock:
            await self._bind_once()
            queue = self._queue
            while True:
                if not queue:
                    self._reload_spilled()
                    if not queue:
                        return
                batch = [queue.popleft() for _ in range(min(len(queue), self._batch_size))]
                try:
                    await self._write_batch(batch)
                except BaseException:
                    queue.extendleft(reversed(batch))  # keep order; retried later
                    raise
                self._committed(batch[-1].seq)

    async def _write_batch(self, batch: list[_Row]) -> None:
        """Write ``batch``; rows the database can never accept are isolated and
        rejected, any other failure raises with nothing of the batch lost."""
        try:
            await self._write(batch)
        except Exception as exc:
            if sqlstate(exc) == LEDGER_MISMATCH:
                log.error("the ledger database changed under this sidecar: writes stop")
            if not is_permanent(exc):
                raise
            await self._write_one_by_one(batch)

    def _committed(self, seq: int) -> None:
        self._set_health(True)
        if self.spool is not None and seq:
            self._committed_seq = seq
            self.spool.committed(seq)
            if seq >= self._recovered_until:
                self.replayed.set()

    async def _write_one_by_one(self, batch: list[_Row]) -> None:
        """Isolate the rows the database can never accept, so that one bad row
        (a programming error upstream) does not hold every later row hostage.
        On any other failure the whole batch is retried (rows already written
        are skipped as duplicates)."""
        for index, entry in enumerate(batch):
            try:
                await self._write([entry])
            except Exception as exc:
                if not is_permanent(exc):
                    del batch[:index]  # the caller keeps the rest for the retry
                    raise
                self.rows_rejected += 1
                log.error("ledger row %s rejected: %s", entry.record.request_id, exc)

    async def _write(self, batch: list[_Row]) -> None:
        self._in_flight = len(batch)
        records = [row.record for row in batch]
        database = self.database
        try:
            if isinstance(database, SqliteDatabase):
                async with database.transaction() as connection:
                    inserted = await write_sqlite(connection, records)
            else:
                assert isinstance(database, PostgresDatabase)
                # Autocommit: the one statement is the transaction (one round trip).
                async with database.connect() as connection:
                    bodies = [row.body for row in batch]
                    inserted = await write_postgres(
                        connection, self.holder, records, bodies, ledger=self.binder.ledger_id
                    )
        finally:
            self._in_flight = 0
        self.rows_written += inserted
        self.duplicates_skipped += len(batch) - inserted
        self.batches_written += 1

    # -- read side used by the budget book ----------------------------------------

    async def spent(self, provider: str, period: str) -> Decimal:
        """Settled spend of ``provider`` in ``period``, including rows still queued."""
        spend = await self.load_spend([provider], since_period=period, until_period=period)
        return spend.get((provider, period), Decimal("0.000000"))

    async def load_spend_buckets(self, since: datetime) -> list[SpendBucketRow]:
        """Settled spend per (provider, model, data class, quarter hour) since ``since``."""
        await self.flush()
        return await spend_buckets(self.database, since)

    async def load_spend(
        self,
        providers: Iterable[str] | None = None,
        *,
        since_period: str | None = None,
        until_period: str | None = None,
    ) -> dict[tuple[str, str], Decimal]:
        """Settled spend per (provider, period), for periods in the inclusive range;
        queued rows are flushed first so the answer includes them."""
        await self.flush()
        return await spend_by_period(self.database, providers, since_period, until_period)
