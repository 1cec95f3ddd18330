"""The write side of the ledger: batched, idempotent, off the request path.

``append`` only puts a record on an in-memory queue (a few hundred nanoseconds,
no I/O, no await), so a slow or locked database never delays an answer. A
background task writes the queue as one multi-row ``INSERT … ON CONFLICT
(request_id) DO NOTHING`` per batch, every ``flush_interval`` seconds or as soon
as ``batch_size`` rows wait. Because every row carries its request id as the
primary key, a batch that is retried after an ambiguous failure (commit sent,
answer lost) cannot create duplicates.

What this store does not do yet (issue 4): spool rows to a local file before the
response completes, so that a crash loses nothing. Until then rows still queued
when the process dies are lost; the budget book is unaffected (it keeps its own
totals in memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from decimal import Decimal
from types import TracebackType
from typing import Self

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import ReturningInsert

from aegis.sidecar.ledger.db import async_url, create_engine
from aegis.sidecar.ledger.migrate import current_revision, head_revision, upgrade
from aegis.sidecar.ledger.models import COLUMNS, LEDGER, LedgerEntry, LedgerRecord
from aegis.sidecar.ledger.periods import check_period

log = logging.getLogger(__name__)

# SQLAlchemy packs at most 1000 rows (insertmanyvalues_page_size) and 32700
# parameters into one statement; a batch must fit in one.
MAX_ROWS_PER_STATEMENT = min(1000, 32_000 // len(COLUMNS))
_MAX_BACKOFF = 5.0


def insert_statement(dialect_name: str) -> ReturningInsert[tuple[str]]:
    """The INSERT for a batch: run with a list of rows, it becomes one multi-row
    ``INSERT … VALUES (…), (…) ON CONFLICT (request_id) DO NOTHING RETURNING request_id``.

    Built with the dialect's own ``insert`` because ``ON CONFLICT DO NOTHING`` is
    not standard SQL (SQLite and PostgreSQL spell it alike). ``RETURNING`` makes
    SQLAlchemy's "insertmanyvalues" batching apply (it packs an executemany into
    one multi-row statement, compiled once and cached, instead of compiling a
    fresh ``VALUES`` list per batch, which costs ~0.2 ms per row) and tells which
    rows were new.
    """
    if dialect_name == "postgresql":
        return (
            postgresql.insert(LEDGER)
            .on_conflict_do_nothing(index_elements=[LEDGER.c.request_id])
            .returning(LEDGER.c.request_id)
        )
    if dialect_name == "sqlite":
        return (
            sqlite.insert(LEDGER)
            .on_conflict_do_nothing(index_elements=[LEDGER.c.request_id])
            .returning(LEDGER.c.request_id)
        )
    raise ValueError(f"unsupported ledger dialect {dialect_name!r}")


def _is_permanent(exc: BaseException) -> bool:
    """True when retrying the same rows cannot succeed: constraint or data errors,
    or values our column types refuse. Connection, lock and schema problems
    (``OperationalError``, ``ProgrammingError``, …) are retried: they get fixed."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    if isinstance(exc, DBAPIError):
        return False
    return isinstance(exc, StatementError | TypeError | ValueError)


class LedgerStore:
    """Batched ledger writer plus the few reads the budget book needs at start."""

    def __init__(
        self,
        url: str | URL,
        *,
        batch_size: int = 256,
        flush_interval: float = 0.1,
        max_pending: int = 100_000,
        migrate: bool | None = None,
        engine: AsyncEngine | None = None,
    ) -> None:
        """``migrate=None`` migrates SQLite ledgers automatically and leaves
        PostgreSQL to ``aegis ledger migrate``; ``engine`` lets tests share one."""
        if not 1 <= batch_size <= MAX_ROWS_PER_STATEMENT:
            raise ValueError(f"batch_size must be 1..{MAX_ROWS_PER_STATEMENT}")
        if flush_interval <= 0 or max_pending < batch_size:
            raise ValueError("flush_interval must be > 0 and max_pending >= batch_size")
        self.url = async_url(make_url(url) if engine is None else engine.url)
        self._is_sqlite = self.url.get_backend_name() == "sqlite"
        self._migrate = self._is_sqlite if migrate is None else migrate
        self._engine = engine
        self._owns_engine = engine is None
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_pending = max_pending
        self._queue: deque[LedgerRecord] = deque()
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._insert: ReturningInsert[tuple[str]] | None = None
        self._in_flight = 0  # rows of the batch being written
        # Counters for metrics and tests.
        self.rows_written = 0
        self.duplicates_skipped = 0
        self.batches_written = 0
        self.write_errors = 0
        self.rows_dropped = 0
        self.rows_rejected = 0

    # -- lifecycle ---------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("LedgerStore.start() has not been awaited")
        return self._engine

    @property
    def pending(self) -> int:
        """Rows appended but not yet committed (for the ledger queue gauge)."""
        return len(self._queue) + self._in_flight

    async def start(self) -> None:
        """Open the database, migrate it if this store owns migrations, start writing."""
        if self._task is not None:
            return
        if self._engine is None:
            self._engine = create_engine(self.url)
        if self._migrate:
            await upgrade(self._engine)
        else:
            revision = await current_revision(self._engine)
            if revision != head_revision():
                log.warning(
                    "ledger schema is at revision %s, this sidecar expects %s: "
                    "run `aegis ledger migrate`",
                    revision,
                    head_revision(),
                )
        self._task = asyncio.create_task(self._run(), name="aegis-ledger-writer")

    async def aclose(self, grace: float = 10.0) -> None:
        """Write every queued row (retrying for up to ``grace`` seconds), then close.

        Rows appended while closing are still written; rows appended after close
        are counted in ``rows_dropped`` and logged, never raised to a request.
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
        if self._queue:
            self.rows_dropped += len(self._queue)
            log.error("ledger closed with %d rows unwritten", len(self._queue))
            self._queue.clear()
        if self._engine is not None and self._owns_engine:
            await self._engine.dispose()

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

    def append(self, record: LedgerRecord) -> None:
        """Queue one row; never blocks, never awaits, never raises (request path)."""
        if self._closed:
            self.rows_dropped += 1
            log.error("ledger row %s dropped: the ledger is closed", record.request_id)
            return
        queue = self._queue
        if len(queue) >= self._max_pending:
            # The database has been failing for a long time; keep memory bounded.
            queue.popleft()
            self.rows_dropped += 1
            if self.rows_dropped == 1 or self.rows_dropped % 1000 == 0:
                log.error("ledger queue full: %d rows dropped so far", self.rows_dropped)
        queue.append(record)
        size = len(queue)
        if size == 1 or size >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything queued now; raises if the database refuses the batch."""
        await self._drain()

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            await self._wake.wait()
            if not self._closing and len(self._queue) < self._batch_size:
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
                backoff = min(max(backoff * 2, self._interval), _MAX_BACKOFF)
                log.exception("ledger write failed; %d rows kept for retry", len(self._queue))
                await asyncio.sleep(backoff)
                self._wake.set()
                continue
            if self._closing and not self._queue:
                return

    async def _drain(self) -> None:
        async with self._write_lock:
            queue = self._queue
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self._batch_size))]
                try:
                    await self._write(batch)
                except Exception as exc:
                    if not _is_permanent(exc):
                        queue.extendleft(reversed(batch))  # keep order; retried later
                        raise
                    await self._write_one_by_one(batch)
                except BaseException:
                    queue.extendleft(reversed(batch))
                    raise

    async def _write_one_by_one(self, batch: list[LedgerRecord]) -> None:
        """Isolate the rows the database can never accept, so that one bad row
        (a programming error upstream) does not hold every later row hostage."""
        for index, entry in enumerate(batch):
            try:
                await self._write([entry])
            except Exception as exc:
                if not _is_permanent(exc):
                    self._queue.extendleft(reversed(batch[index:]))
                    raise
                self.rows_rejected += 1
                log.error("ledger row %s rejected: %s", entry.request_id, exc)
            except BaseException:
                self._queue.extendleft(reversed(batch[index:]))
                raise

    async def _write(self, batch: list[LedgerRecord]) -> None:
        statement = self._insert
        if statement is None:
            statement = self._insert = insert_statement(self.engine.dialect.name)
        self._in_flight = len(batch)
        try:
            async with self.engine.begin() as connection:
                result = await connection.execute(statement, [r.as_params() for r in batch])
                inserted = len(result.all())
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

    async def load_spend(
        self,
        providers: Iterable[str] | None = None,
        *,
        since_period: str | None = None,
        until_period: str | None = None,
    ) -> dict[tuple[str, str], Decimal]:
        """Settled spend per (provider, period), for periods in the inclusive range.

        Queued rows are flushed first so the answer includes them. Filtering by
        provider keeps this on ``ix_ledger_entries_provider_period_cost_usd``.
        """
        await self.flush()
        e = LedgerEntry
        query = select(e.provider, e.period, func.sum(e.cost_usd)).group_by(e.provider, e.period)
        if providers is not None:
            query = query.where(e.provider.in_(sorted(set(providers))))
        if since_period is not None:
            query = query.where(e.period >= check_period(since_period))
        if until_period is not None:
            query = query.where(e.period <= check_period(until_period))
        async with self.engine.connect() as connection:
            result = await connection.execute(query)
            return {(provider, period): total for provider, period, total in result}
