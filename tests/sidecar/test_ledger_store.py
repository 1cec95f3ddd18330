"""LedgerStore against real SQLite files: batching, idempotency, exact money."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from aegis.sidecar.contract.money import quantize_usd
from aegis.sidecar.ledger.database import SqliteConnection
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.models import LedgerEntry
from aegis.sidecar.ledger.store import LedgerStore
from tests.sidecar.ledger_helpers import record, sqlite_url
from tests.sidecar.shared_helpers import poll_until


class Statements:
    """What SQLite runs for the store (the trace callback of its connection):
    ``BEGIN``, the ``INSERT`` with each row's values (traced again at each trigger
    step), ``COMMIT``.

    ``inserts`` is how many rows each write transaction sent (one batch each).
    """

    def __init__(self) -> None:
        self.sql: list[str] = []  # appended from aiosqlite's thread

    @property
    def tried(self) -> bool:
        return any(sql.startswith("INSERT INTO ledger_entries") for sql in list(self.sql))

    @property
    def inserts(self) -> list[int]:
        batches: list[int] = []
        rows: set[str] = set()
        for sql in list(self.sql):
            if sql.startswith("INSERT INTO ledger_entries"):
                assert "ON CONFLICT (request_id) DO NOTHING" in sql
                rows.add(sql.split("VALUES (", 1)[1].split(",", 1)[0])  # the request id
            elif sql == "COMMIT" and rows:
                batches.append(len(rows))
                rows = set()
        return batches


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LedgerStore]:
    ledger = LedgerStore(sqlite_url(tmp_path), batch_size=50, flush_interval=0.05)
    await ledger.start()
    yield ledger
    await ledger.aclose()


async def watch(store: LedgerStore) -> Statements:
    statements = Statements()
    async with store.database.connect() as connection:  # the store's one connection
        assert isinstance(connection, SqliteConnection)
        await connection.driver.set_trace_callback(statements.sql.append)
    return statements


async def read(store: LedgerStore, *columns: Any) -> list[Any]:
    """``columns`` of every row, read as the reports read them (SQLAlchemy's types)."""
    engine = create_engine(store.url, create=False)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(select(*columns)))
    finally:
        await engine.dispose()


async def until_written(store: LedgerStore) -> None:
    """Poll the queue gauge, as the metrics endpoint would (the writer is internal)."""
    async with asyncio.timeout(10):
        for _ in iter(lambda: store.pending, 0):
            await asyncio.sleep(0.01)  # poll; the deadline is the timeout above


async def count_rows(store: LedgerStore) -> int:
    [(count,)] = await read(store, func.count(LedgerEntry.request_id))
    return int(count)


async def test_many_appends_become_few_multi_row_inserts(store: LedgerStore) -> None:
    statements = await watch(store)
    for i in range(500):
        store.append(record(i))
    await store.flush()
    assert await count_rows(store) == 500
    assert statements.inserts == [50] * 10  # 500 rows / batch_size 50, a transaction each
    assert store.batches_written == 10


async def test_background_writer_flushes_on_interval_and_on_full_batch(
    store: LedgerStore,
) -> None:
    statements = await watch(store)
    for i in range(7):
        store.append(record(i))
    assert store.pending == 7
    await until_written(store)  # after flush_interval, with no flush() asked for
    assert statements.inserts == [7]  # one batch
    for i in range(7, 57):  # exactly one full batch wakes the writer at once
        store.append(record(i))
    await until_written(store)
    assert await count_rows(store) == 57
    assert statements.inserts == [7, 50]


async def test_a_batch_below_the_size_waits_for_the_interval(tmp_path: Path) -> None:
    # An interval no test outlives: only a full batch (or a flush) writes.
    async with LedgerStore(sqlite_url(tmp_path), batch_size=50, flush_interval=3600) as store:
        await store.flush()  # bound to its ledger: the writer waits for rows now
        statements = await watch(store)
        for i in range(49):
            store.append(record(i))
        for _ in range(20):
            await asyncio.sleep(0)  # deliberate: give the writer every chance to run
        assert (store.pending, statements.inserts) == (49, [])
        store.append(record(49))  # the 50th fills the batch: written without a flush()
        await until_written(store)
        assert statements.inserts == [50]


async def test_append_never_waits_for_a_locked_database(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    async with LedgerStore(url, batch_size=10, flush_interval=0.02) as store:
        statements = await watch(store)
        locker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        for i in range(100):
            store.append(record(i))  # synchronous: returns although the database is locked
        assert store.pending == 100  # no I/O on the request path: nothing written yet
        await poll_until(lambda: statements.tried)  # the writer tried ...
        assert store.pending == 100  # ... and is stuck behind the lock
        locker.execute("COMMIT")
        locker.close()
        await until_written(store)
        assert await count_rows(store) == 100


async def test_same_request_id_is_written_once(store: LedgerStore) -> None:
    store.append(record(1))
    store.append(record(1, cost_usd=Decimal("9")))  # same batch
    await store.flush()
    store.append(record(1, cost_usd=Decimal("7")))  # later batch (a replay)
    await store.flush()
    assert await count_rows(store) == 1
    assert store.rows_written == 1
    assert store.duplicates_skipped == 2
    assert await store.spent("dashscope", "2026-11") == Decimal("0.000123")


async def test_sums_are_exact_to_the_micro_dollar(store: LedgerStore) -> None:
    costs = [Decimal("0.000001") * (i % 7) + Decimal("0.1") for i in range(3000)]
    for i, cost in enumerate(costs):
        store.append(record(i, cost_usd=cost))
    total = await store.spent("dashscope", "2026-11")
    assert total == sum(costs) == Decimal("300.008994")
    assert isinstance(total, Decimal)
    assert total.as_tuple().exponent == -6


async def test_costs_are_rounded_like_numeric_18_6(store: LedgerStore) -> None:
    store.append(record(1, cost_usd=Decimal("0.0000005")))  # half: rounds up
    store.append(record(2, cost_usd=Decimal("0.00000049")))  # rounds down
    store.append(record(3, cost_usd=Decimal("123456.1234565")))
    spent = await store.spent("dashscope", "2026-11")
    assert spent == Decimal("0.000001") + Decimal("123456.123457")
    assert quantize_usd(Decimal("0.0000005")) == Decimal("0.000001")


async def test_spent_includes_rows_still_queued(store: LedgerStore) -> None:
    store.append(record(1, cost_usd=Decimal("1.5")))
    assert store.pending == 1
    assert await store.spent("dashscope", "2026-11") == Decimal("1.5")
    assert await store.spent("dashscope", "2026-10") == Decimal(0)
    assert await store.spent("openai", "2026-11") == Decimal(0)


async def test_load_spend_groups_by_provider_and_period(store: LedgerStore) -> None:
    store.append(record(1, cost_usd=Decimal("1")))
    store.append(record(2, cost_usd=Decimal("2"), period="2026-10"))
    store.append(record(3, cost_usd=Decimal("4"), provider="openai", model="gpt-4o"))
    store.append(record(4, cost_usd=Decimal("8"), period="2026-09"))
    assert await store.load_spend(since_period="2026-10") == {
        ("dashscope", "2026-11"): Decimal(1),
        ("dashscope", "2026-10"): Decimal(2),
        ("openai", "2026-11"): Decimal(4),
    }
    assert await store.load_spend(["openai"]) == {("openai", "2026-11"): Decimal(4)}
    with pytest.raises(ValueError, match="YYYY-MM"):
        await store.load_spend(since_period="2026-13")


async def test_aclose_writes_everything_and_a_new_store_sees_it(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    store = LedgerStore(url, batch_size=100, flush_interval=10)
    await store.start()
    for i in range(250):
        store.append(record(i))
    await store.aclose()
    store.append(record(999))  # too late: counted and logged, not raised into a request
    assert store.rows_dropped == 1
    async with LedgerStore(url) as again:
        assert await count_rows(again) == 250
        assert await again.spent("dashscope", "2026-11") == Decimal("0.000123") * 250


async def test_timestamps_are_stored_as_utc(store: LedgerStore) -> None:
    berlin = timezone(timedelta(hours=1))
    local = datetime(2026, 11, 3, 13, 0, 0, 250_000, tzinfo=berlin)
    store.append(record(1, created_at=local))
    await store.flush()
    [(stored,)] = await read(store, LedgerEntry.created_at)
    assert stored == local
    assert stored.tzinfo == UTC


async def test_a_bad_row_is_rejected_alone(store: LedgerStore) -> None:
    store.append(record(1))
    store.append(record(2, cost_usd=0.1))  # float money: refused by the column type
    store.append(record(3, created_at=datetime(2026, 11, 3, 12, 0)))  # naive time
    store.append(record(4, arm="canary"))  # CHECK constraint
    store.append(record(5, cost_usd=Decimal("-1")))  # CHECK constraint
    store.append(record(6))
    await store.flush()
    assert store.pending == 0
    assert store.rows_rejected == 4
    ids = [row[0] for row in await read(store, LedgerEntry.request_id)]
    assert sorted(ids) == ["req-000001", "req-000006"]


async def test_long_strings_are_cut_to_the_column_length(store: LedgerStore) -> None:
    store.append(record(1, model="m" * 300, fallback_reason="openai:timeout," * 10))
    await store.flush()
    [(model, reason)] = await read(store, LedgerEntry.model, LedgerEntry.fallback_reason)
    assert model == "m" * 128
    assert reason is not None and len(reason) == 64


def test_store_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        LedgerStore(sqlite_url(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="unsupported"):
        LedgerStore("mysql://localhost/x")
