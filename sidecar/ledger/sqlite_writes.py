"""A batch of ledger rows into SQLite through the driver's own connection.

The standalone sidecar writes every batch into its SQLite file. Through SQLAlchemy's
Core ``insert`` that cost a compiled multi-row statement (a new text, so a new
SQLite prepare, for every batch size), a dict of parameters per row and a type
processor per value on the event loop, and four trips to aiosqlite's thread
(cursor, execute, fetch, close). Here the batch is one ``executemany`` of a single
precompiled ``INSERT … ON CONFLICT (request_id) DO NOTHING`` (SQLite keeps it
prepared in the connection's statement cache), on the raw aiosqlite connection of
the caller's SQLAlchemy transaction, so the commit, the retries and the pool stay
SQLAlchemy's.

Same semantics as the Core statement: the values go through the columns' own bind
processors (Money as micro-dollars with its float and range checks, UTCDateTime
normalised to UTC and refused when naive, SQLite's DATETIME text), so both paths
store the same bytes (a test compares them); duplicates are skipped; the count of
new rows is the statement's change count, which leaves out the summary trigger's
own changes (``sqlite3_changes``). Driver errors are raised as SQLAlchemy's
exceptions (``IntegrityError`` for a CHECK violation, …), so the store tells
permanent failures from retryable ones as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection

from .models import COLUMNS, LEDGER, STRING_LENGTHS, LedgerRecord
from .types import UTCDateTime

INSERT_SQL = (
    f"INSERT INTO {LEDGER.name} ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT (request_id) DO NOTHING"
)

Processor = Callable[[Any], Any]
_processors: dict[type[Dialect], list[tuple[int, Processor]]] = {}

# LedgerRecord.as_params without its dict: the values in column order, the enums
# as plain strings, the strings cut to their column's length (a test holds the two
# to the same rows).
_VALUES = attrgetter(*COLUMNS)
_ENUMS = tuple(COLUMNS.index(name) for name in ("arm", "status"))
_CUTS = tuple((COLUMNS.index(name), length) for name, length in STRING_LENGTHS)


def _utc_text(value: datetime | None) -> str | None:
    """UTCDateTime's bind on SQLite followed by the dialect's DATETIME text, at a
    quarter of the cost: the instant in UTC as ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("ledger timestamps must be timezone-aware")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _bind_processors(dialect: Dialect) -> list[tuple[int, Processor]]:
    """(position, processor) of the columns whose values the dialect converts."""
    found = _processors.get(type(dialect))
    if found is None:
        found = []
        for index, name in enumerate(COLUMNS):
            column_type = LEDGER.c[name].type
            if isinstance(column_type, UTCDateTime) and dialect.name == "sqlite":
                found.append((index, _utc_text))
                continue
            processor = column_type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                found.append((index, processor))
        _processors[type(dialect)] = found
    return found


def row_values(records: Sequence[LedgerRecord], dialect: Dialect) -> list[list[Any]]:
    """The parameter rows of ``records`` (in :data:`COLUMNS` order), as SQLAlchemy
    would bind them; a value a column refuses raises ``StatementError``."""
    processors = _bind_processors(dialect)
    rows = []
    for record in records:
        values = list(_VALUES(record))
        for index in _ENUMS:
            values[index] = str(values[index])
        for index, length in _CUTS:
            value = values[index]
            if value is not None and len(value) > length:
                values[index] = value[:length]
        for index, processor in processors:
            try:
                values[index] = processor(values[index])
            except (TypeError, ValueError) as exc:
                raise StatementError(str(exc), INSERT_SQL, None, exc) from exc
        rows.append(values)
    return rows


async def write_sqlite_rows(connection: AsyncConnection, rows: Sequence[LedgerRecord]) -> int:
    """Insert ``rows`` in ``connection``'s transaction; returns how many were new."""
    params = row_values(rows, connection.dialect)
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None  # a checked-out connection has its driver connection
    try:
        async with driver.executemany(INSERT_SQL, params) as cursor:
            return int(cursor.rowcount)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(INSERT_SQL, None, exc, sqlite3.Error) from exc
