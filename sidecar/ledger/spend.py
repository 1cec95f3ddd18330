"""Settled spend per provider and month, and per quarter hour: what a standalone
budget book starts from."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..contract.money import usd_of_micro, usd_or_zero
from ..contract.periods import check_period
from .database import Database
from .sqlite_writes import utc_text

__all__ = ["SpendBucketRow", "as_instant", "quarter_hour_sql", "spend_buckets", "spend_by_period"]

#: (provider, model, data class, the row's month, quarter hour's start in UTC, settled USD)
SpendBucketRow = tuple[str, str, str, str, datetime, Decimal]

# The start of a row's quarter hour in UTC, per backend. SQLite's created_at is
# 'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC (:func:`~.sqlite_writes.utc_text`).
_QUARTER_HOUR = {
    True: "strftime('%Y-%m-%d %H:', created_at) "
    "|| printf('%02d', CAST(strftime('%M', created_at) AS INTEGER) / 15 * 15)",
    False: "date_trunc('hour', created_at) "
    "+ floor(extract(minute FROM created_at) / 15) * interval '15 minutes'",
}


def quarter_hour_sql(sqlite: bool) -> str:
    """The start of a ``ledger_entries`` row's quarter hour (UTC), as an SQL expression."""
    return _QUARTER_HOUR[sqlite]


def _usd(value: Any, sqlite: bool) -> Decimal:
    """A money sum as the backend returns it: micro-dollars on SQLite, NUMERIC else."""
    return usd_of_micro(value) if sqlite and value is not None else usd_or_zero(value)


def _placeholders(sqlite: bool, first: int, count: int) -> list[str]:
    return ["?"] * count if sqlite else [f"${n}" for n in range(first, first + count)]


async def spend_by_period(
    database: Database,
    providers: Iterable[str] | None = None,
    since_period: str | None = None,
    until_period: str | None = None,
) -> dict[tuple[str, str], Decimal]:
    """Settled spend per (provider, period), for periods in the inclusive range.

    Read from ``ledger_summary`` (kept with every insert, and after retention drops a
    month's rows), not from the rows: no index on the ledger serves it (0012).
    """
    sqlite = database.is_sqlite
    conditions: list[str] = []
    args: list[Any] = []
    if providers is not None:
        names = sorted(set(providers))
        if not names:
            return {}
        marks = _placeholders(sqlite, len(args) + 1, len(names))
        conditions.append(f"provider IN ({', '.join(marks)})")
        args.extend(names)
    for bound, operator in ((since_period, ">="), (until_period, "<=")):
        if bound is not None:
            conditions.append(f"period {operator} {_placeholders(sqlite, len(args) + 1, 1)[0]}")
            args.append(check_period(bound))
    table = "ledger_summary" if sqlite else "aegis.ledger_summary"
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = f"SELECT provider, period, sum(cost_usd) FROM {table}{where} GROUP BY provider, period"
    async with database.connect() as connection:
        rows = await connection.fetch(sql, *args)
    return {(str(p), str(period)): _usd(total, sqlite) for p, period, total in rows}


def as_instant(value: Any) -> datetime:
    """A quarter hour's start as an aware UTC instant."""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


async def spend_buckets(database: Database, since: datetime) -> list[SpendBucketRow]:
    """Settled spend per provider, model, data class, month (the rows') and quarter
    hour (UTC) of rows written at or after ``since``: enough for a budget's filters and
    any period's bounds in any time zone (offsets are multiples of 15 minutes)."""
    sqlite = database.is_sqlite
    quarter = quarter_hour_sql(sqlite)
    table = "ledger_entries" if sqlite else "aegis.ledger_entries"
    mark = "?" if sqlite else "$1"
    sql = (
        f"SELECT provider, model, data_class, period, {quarter} AS quarter, sum(cost_usd) "
        f"FROM {table} WHERE created_at >= {mark} AND cost_usd > 0 "
        "GROUP BY provider, model, data_class, period, quarter"
    )
    async with database.connect() as connection:
        rows = await connection.fetch(sql, utc_text(since) if sqlite else since)
    return [
        (str(p), str(m), str(c), str(month), as_instant(at), _usd(total, sqlite))
        for p, m, c, month, at, total in rows
    ]
