"""Monthly partitions of the ledger and retention (``aegis ledger retention``).

PostgreSQL (migration 0007): ``aegis.ledger_entries`` has one partition per calendar
month of ``created_at`` in UTC (``ledger_entries_YYYY_MM``) and a default partition
that takes a row whose month has none, so an insert never fails.
:func:`ensure_partitions` creates the current month's partition and the next ones
and moves rows out of the default partition into partitions of their own; the
migration job runs it after every migration, the operator on a timer (control role).

Retention keeps the newest ``keep`` months (the current one included, at least two,
so no budget period that is current anywhere reaches a removed month) and removes
older months oldest first, each exported before it goes: PostgreSQL detaches the
month's partition (a moment's lock; the month's later rows, such as a late spool
replay, go to the default partition and get a partition of their own again), writes
its rows to a file, and drops it; SQLite deletes the month's rows in one
``DELETE … RETURNING`` whose rows are the export, committed only once the file is
written. Totals stay in ``ledger_summary`` (:class:`~.models.LedgerSummary`), which
retention never touches: reports of removed months keep their requests, tokens and
cost.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TextIO

from sqlalchemy import Column, MetaData, Table, delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .models import COLUMNS, LEDGER
from .source import LedgerSource, open_engine

ExportFormat = Literal["csv", "json"]
#: The current month and the previous one are never removed.
MIN_KEEP_MONTHS = 2
MONTHS_AHEAD = 3
_PARTITION = re.compile(r"^ledger_entries_(\d{4})_(\d{2})$")
_ENSURE = text("SELECT aegis.ensure_partitions(:ahead, :at)")
_PARTITIONS = text(
    "SELECT c.relname, i.inhrelid IS NOT NULL FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid "
    "WHERE n.nspname = 'aegis' AND c.relkind = 'r' "
    "AND c.relname ~ '^ledger_entries_[0-9]{4}_[0-9]{2}$'"
)


@dataclass(frozen=True, slots=True)
class RemovedMonth:
    month: str  # YYYY-MM of created_at, in UTC
    rows: int
    exported: Path | None


async def ensure_partitions(
    source: LedgerSource, months_ahead: int = MONTHS_AHEAD, *, now: datetime | None = None
) -> int:
    """PostgreSQL: partitions for this month and ``months_ahead`` more, and for the rows
    waiting in the default partition; returns how many were created (SQLite: 0)."""
    async with open_engine(source) as engine:
        if engine.dialect.name != "postgresql":
            return 0
        async with engine.begin() as connection:
            return await _ensure(connection, months_ahead, now)


async def _ensure(connection: AsyncConnection, months_ahead: int, now: datetime | None) -> int:
    at = now or datetime.now(UTC)
    result = await connection.execute(_ENSURE, {"ahead": months_ahead, "at": at})
    return int(result.scalar_one())


def first_kept(now: datetime, keep_months: int) -> str:
    """The oldest month (``YYYY-MM``, UTC) that ``keep_months`` keeps at ``now``."""
    if keep_months < MIN_KEEP_MONTHS:
        raise ValueError(
            f"keep at least {MIN_KEEP_MONTHS} months (the current one and the one before: "
            f"budget periods that are current in some time zone reach into it), "
            f"not {keep_months}"
        )
    utc = now.astimezone(UTC)
    index = utc.year * 12 + utc.month - 1 - (keep_months - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _bounds(month: str) -> tuple[datetime, datetime]:
    year, number = int(month[:4]), int(month[5:7])
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _table(name: str) -> Table:
    """A month's (detached) partition, typed as the ledger (schema ``aegis`` by the
    engine's schema map)."""
    return Table(name, MetaData(), *(Column(c.name, c.type) for c in LEDGER.columns))


async def retention(
    source: LedgerSource,
    keep_months: int,
    export_dir: Path | None,
    *,
    fmt: ExportFormat = "csv",
    now: datetime | None = None,
) -> list[RemovedMonth]:
    """Remove the ledger's raw rows of every month older than the newest
    ``keep_months``, each month exported to ``export_dir`` first (``None``: removed
    without an export). The summary table keeps their totals."""
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown export format {fmt!r}: use csv or json")
    oldest = first_kept(now or datetime.now(UTC), keep_months)
    if export_dir is not None:
        await asyncio.to_thread(export_dir.mkdir, parents=True, exist_ok=True)
    async with open_engine(source) as engine:
        if engine.dialect.name == "postgresql":
            # Transactions of their own, whatever the caller's engine does.
            own = engine.execution_options(isolation_level="READ COMMITTED")
            return await _drop_partitions(own, oldest, export_dir, fmt, now)
        return await _delete_months(engine, oldest, export_dir, fmt)


async def _drop_partitions(
    engine: AsyncEngine, oldest: str, export_dir: Path | None, fmt: ExportFormat, now: Any
) -> list[RemovedMonth]:
    removed: list[RemovedMonth] = []
    while True:  # until no old month is left (rows may have arrived for one meanwhile)
        async with engine.begin() as connection:
            # Rows waiting in the default partition get their month's partition first.
            await _ensure(connection, 0, now)
            found: dict[str, bool] = {n: a for n, a in await connection.execute(_PARTITIONS)}
        old = sorted(name for name in found if _month(name) < oldest)
        if not old:
            return removed
        for name in old:
            if found[name]:  # else detached by an interrupted run: exported and dropped now
                async with engine.begin() as connection:
                    await connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                    await connection.execute(
                        text(f"ALTER TABLE aegis.ledger_entries DETACH PARTITION aegis.{name}")
                    )
            # Detached, the month's table takes no more rows: read it, then drop it.
            table = _table(name)
            async with engine.begin() as connection:
                query = select(*table.columns).order_by(table.c.created_at, table.c.request_id)
                result = await connection.stream(query)
                path, count = await _export(_month(name), _rows(result), export_dir, fmt)
            async with engine.begin() as connection:
                await connection.execute(text(f"DROP TABLE aegis.{name}"))
            removed.append(RemovedMonth(_month(name), count, path))


def _month(name: str) -> str:
    match = _PARTITION.match(name)
    assert match is not None, name
    return f"{match[1]}-{match[2]}"


async def _delete_months(
    engine: AsyncEngine, oldest: str, export_dir: Path | None, fmt: ExportFormat
) -> list[RemovedMonth]:
    """SQLite: per month, one ``DELETE … RETURNING`` whose rows are the export."""
    e = LEDGER.c
    start, _ = _bounds(oldest)
    async with engine.connect() as connection:
        first = await connection.scalar(select(e.created_at).order_by(e.created_at).limit(1))
    removed: list[RemovedMonth] = []
    month = None if first is None or first >= start else f"{first:%Y-%m}"
    while month is not None and month < oldest:
        low, high = _bounds(month)
        async with engine.begin() as connection:
            gone = (
                delete(LEDGER)
                .where(e.created_at >= low, e.created_at < high)
                .returning(*LEDGER.columns)
            )
            rows = sorted((await connection.execute(gone)).all(), key=lambda r: (r[1], r[0]))
            if rows:  # committed only once the export is written
                path, count = await _export(month, _plain(rows), export_dir, fmt)
                removed.append(RemovedMonth(month, count, path))
        month = None if high >= start else f"{high:%Y-%m}"
    return removed


async def _rows(result: Any) -> AsyncIterator[Sequence[Any]]:
    async for row in result:
        yield row


async def _plain(rows: Iterable[Sequence[Any]]) -> AsyncIterator[Sequence[Any]]:
    for row in rows:
        yield row


def _text(value: Any) -> Any:
    """As ``aegis ledger export`` writes them: money as exact decimal strings, instants
    in ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def _export(
    month: str, rows: AsyncIterator[Sequence[Any]], export_dir: Path | None, fmt: ExportFormat
) -> tuple[Path | None, int]:
    """Write a month's rows as ``aegis ledger export`` does, to a new file in
    ``export_dir`` (durable before it is named; never over an earlier export)."""
    if export_dir is None:
        count = 0
        async for _ in rows:
            count += 1
        return None, count
    target = export_dir / f"ledger-{month}.{fmt}"
    serial = 1
    while target.exists():
        target = export_dir / f"ledger-{month}.{serial}.{fmt}"
        serial += 1
    partial = target.with_name(target.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as out:
        count = await _write(rows, out, fmt)
        out.flush()
        os.fsync(out.fileno())
    partial.rename(target)
    directory = os.open(export_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return target, count


async def _write(rows: AsyncIterator[Sequence[Any]], out: TextIO, fmt: ExportFormat) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        async for row in rows:
            writer.writerow(["" if v is None else _text(v) for v in row])
            count += 1
        return count
    out.write("[")
    async for row in rows:
        out.write(",\n" if count else "\n")
        entry = {k: _text(v) for k, v in zip(COLUMNS, row, strict=True)}
        out.write(json.dumps(entry, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count
