"""The SQLite batch writer (one ``executemany`` on aiosqlite, no SQLAlchemy) stores
exactly what SQLAlchemy's Core insert through the ledger's column types stores (the
reports read the rows through those types), and counts and refuses rows alike."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite import aiosqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from aegis.sidecar.ledger import records
from aegis.sidecar.ledger.database import DatabaseError, SqliteDatabase, open_database
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import upgrade
from aegis.sidecar.ledger.models import COLUMNS, LEDGER, Status
from aegis.sidecar.ledger.revision import prepare
from aegis.sidecar.ledger.sqlite_writes import row_values, write_sqlite_rows
from tests.sidecar.ledger_helpers import record, sqlite_url

# Values that each column's conversion touches: money rounded to the micro-dollar,
# an instant in another zone, a string over its column's length, enums, NULLs.
ROWS = [
    record(1),
    record(
        2,
        cost_usd=Decimal("123456.1234565"),
        created_at=datetime(2026, 11, 3, 13, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=1))),
        model="m" * 300,
        fallback_reason="openai:timeout," * 10,
        status=Status.ERROR,
        ttft_ms=17,
        pii_detectors="email,iban",
        workload="Deployment/web",
    ),
    record(3, cost_usd=0, created_at=datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
]


# The reference: SQLAlchemy's Core insert of the rows' params through the columns' types.
CORE_INSERT = (
    sqlite.insert(LEDGER)
    .on_conflict_do_nothing(index_elements=[LEDGER.c.request_id])
    .returning(LEDGER.c.request_id)
)


async def ledger(tmp_path: Path, name: str) -> AsyncEngine:
    engine = create_engine(sqlite_url(tmp_path, name))
    await upgrade(engine)
    return engine


async def database(tmp_path: Path, name: str) -> SqliteDatabase:
    url = sqlite_url(tmp_path, name)
    opened = open_database(url)
    assert isinstance(opened, SqliteDatabase)
    assert await prepare(opened)
    return opened


def stored(path: Path) -> list[Any]:
    """Every row of the ledger and its summary, with each value's SQLite storage class."""
    with sqlite3.connect(path) as db:
        entries = db.execute("SELECT * FROM ledger_entries ORDER BY request_id").fetchall()
        kinds = db.execute(
            "SELECT typeof(created_at), typeof(cost_usd), typeof(tokens_in) FROM ledger_entries"
        ).fetchall()
        summary = db.execute("SELECT * FROM ledger_summary").fetchall()
    return [entries, kinds, summary]


async def test_rows_are_stored_as_the_core_insert_stores_them(tmp_path: Path) -> None:
    raw, core = await database(tmp_path, "raw.db"), await ledger(tmp_path, "core.db")
    try:
        async with raw.transaction() as connection:
            assert await write_sqlite_rows(connection, ROWS) == 3
        async with core.begin() as conn:
            params = [r.as_params() for r in ROWS]
            assert len((await conn.execute(CORE_INSERT, params)).all()) == 3
    finally:
        await raw.aclose()
        await core.dispose()
    assert stored(tmp_path / "raw.db") == stored(tmp_path / "core.db")
    entries = stored(tmp_path / "raw.db")[0]
    assert entries[1][1] == "2026-11-03 12:00:00.250000"  # UTC, SQLAlchemy's DATETIME text
    assert entries[1][13] == 123456123457  # micro-dollars, rounded half up


async def test_new_rows_are_counted_and_duplicates_skipped(tmp_path: Path) -> None:
    db = await database(tmp_path, "ledger.db")
    try:
        async with db.transaction() as connection:
            assert await write_sqlite_rows(connection, [record(1), record(2), record(1)]) == 2
        async with db.transaction() as connection:  # a replayed batch with one new row
            assert await write_sqlite_rows(connection, [record(2), record(3)]) == 1
    finally:
        await db.aclose()
    entries, _, summary = stored(tmp_path / "ledger.db")
    assert [e[0] for e in entries] == ["req-000001", "req-000002", "req-000003"]
    assert summary[0][5] == 3  # the trigger counted each new row once


@pytest.mark.parametrize(
    ("row", "error"),
    [
        (record(1, cost_usd=0.1), TypeError),  # float money
        (record(1, created_at=datetime(2026, 11, 3, 12, 0)), ValueError),  # naive time
        (record(1, cost_usd=Decimal("-1")), DatabaseError),  # CHECK constraint
        (record(1, arm="canary"), DatabaseError),  # CHECK constraint
    ],
)
async def test_refused_rows_raise_and_roll_the_batch_back(
    tmp_path: Path, row: Any, error: type[Exception]
) -> None:
    db = await database(tmp_path, "ledger.db")
    try:
        with pytest.raises(error) as refused:
            async with db.transaction() as connection:
                await write_sqlite_rows(connection, [record(2), row])
        if isinstance(refused.value, DatabaseError):
            assert refused.value.permanent  # the store rejects the row, never retries it
    finally:
        await db.aclose()
    assert stored(tmp_path / "ledger.db")[0] == []  # the batch's transaction rolled back


def test_row_values_are_the_core_inserts_bound_parameters() -> None:
    """row_values reads the record without as_params' dict and converts the values
    itself: the same values as as_params through every column's own bind processor."""
    dialect = aiosqlite.dialect()
    processors = [
        (i, p)
        for i, name in enumerate(COLUMNS)
        if (p := LEDGER.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
    ]
    expected = []
    for row in ROWS:
        values = list(row.as_params().values())
        for index, processor in processors:
            values[index] = processor(values[index])
        expected.append(values)
    assert row_values(ROWS) == expected


def test_the_records_columns_are_the_tables() -> None:
    """records.COLUMNS and STRING_LENGTHS (what the sidecar writes, without SQLAlchemy)
    are the ledger table's columns and VARCHAR lengths, in order."""
    names = tuple(column.name for column in LEDGER.columns)
    lengths = tuple(
        (column.name, column.type.length)
        for column in LEDGER.columns
        if isinstance(column.type, String) and column.type.length is not None
    )
    assert (names, lengths) == (records.COLUMNS, records.STRING_LENGTHS)
