"""A batch of ledger rows into SQLite: one ``executemany`` of one prepared INSERT.

The standalone sidecar writes every batch into its SQLite file as a single
``INSERT … ON CONFLICT (request_id) DO NOTHING`` run for the batch's rows (SQLite
keeps it prepared in the connection's statement cache), in one transaction.

The values are stored as the ledger's SQLAlchemy column types store them, so that
the reports (which read through those types) see the same rows: money as integer
micro-dollars (:class:`~aegis.sidecar.ledger.types.Money`: exact, in range, never
a float), instants normalised to UTC as ``YYYY-MM-DD HH:MM:SS.ffffff`` (naive ones
refused), enums as plain strings, strings cut to their column's length (a test
compares the bytes with SQLAlchemy's Core insert). Duplicates are skipped; the count
of new rows is the statement's change count, which leaves out the summary trigger's
own changes (``sqlite3_changes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from ..contract.money import micro_usd
from .database import SqliteConnection
from .records import COLUMNS, STRING_LENGTHS, LedgerRecord

__all__ = ["INSERT_SQL", "row_values", "write_sqlite_rows"]

INSERT_SQL = (
    f"INSERT INTO ledger_entries ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT (request_id) DO NOTHING"
)

# LedgerRecord.as_params without its dict: the values in column order.
_VALUES = attrgetter(*COLUMNS)
_ENUMS = tuple(COLUMNS.index(name) for name in ("arm", "status"))
_CUTS = tuple((COLUMNS.index(name), length) for name, length in STRING_LENGTHS)
_CREATED_AT = COLUMNS.index("created_at")
_COST = COLUMNS.index("cost_usd")


def utc_text(value: datetime) -> str:
    """An instant as the ledger's SQLite DATETIME text, in UTC."""
    if not isinstance(value, datetime):
        raise TypeError(f"ledger timestamps are datetimes, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("ledger timestamps must be timezone-aware")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def row_values(records: Sequence[LedgerRecord]) -> list[list[Any]]:
    """The parameter rows of ``records``, in :data:`COLUMNS` order; a value the
    ledger refuses raises ``TypeError`` or ``ValueError``."""
    rows = []
    for record in records:
        values = list(_VALUES(record))
        for index in _ENUMS:
            values[index] = str(values[index])
        for index, length in _CUTS:
            value = values[index]
            if value is not None and len(value) > length:
                values[index] = value[:length]
        values[_CREATED_AT] = utc_text(values[_CREATED_AT])
        values[_COST] = micro_usd(values[_COST])
        rows.append(values)
    return rows


async def write_sqlite_rows(connection: SqliteConnection, rows: Sequence[LedgerRecord]) -> int:
    """Insert ``rows`` in ``connection``'s transaction; returns how many were new."""
    return await connection.executemany(INSERT_SQL, row_values(rows))
