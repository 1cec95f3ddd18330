"""Settled spend per provider and month, and per quarter hour: what a standalone
budget book starts from."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, String, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ..contract.periods import check_period
from .models import LedgerEntry
from .summary import LedgerSummary


async def spend_by_period(
    engine: AsyncEngine,
    providers: Iterable[str] | None = None,
    since_period: str | None = None,
    until_period: str | None = None,
) -> dict[tuple[str, str], Decimal]:
    """Settled spend per (provider, period), for periods in the inclusive range.

    Read from ``ledger_summary`` (kept with every insert, and after retention drops a
    month's rows), not from the rows: no index on the ledger serves it (0012).
    """
    e = LedgerSummary
    query = select(e.provider, e.period, func.sum(e.cost_usd)).group_by(e.provider, e.period)
    if providers is not None:
        query = query.where(e.provider.in_(sorted(set(providers))))
    if since_period is not None:
        query = query.where(e.period >= check_period(since_period))
    if until_period is not None:
        query = query.where(e.period <= check_period(until_period))
    async with engine.connect() as connection:
        result = await connection.execute(query)
        return {(provider, period): total for provider, period, total in result}


#: (provider, model, data class, the row's month, quarter hour's start in UTC, settled USD)
SpendBucketRow = tuple[str, str, str, str, datetime, Decimal]


def quarter_hour(engine: AsyncEngine) -> Any:
    """The start of a row's quarter hour (UTC), in the engine's dialect."""
    e = LedgerEntry
    if engine.dialect.name == "sqlite":  # created_at is 'YYYY-MM-DD HH:MM:SS[.ffffff]'
        quarter = cast(func.strftime("%M", e.created_at), Integer) / 15 * 15
        hour = func.strftime("%Y-%m-%d %H:", e.created_at, type_=String)
        return hour.concat(func.printf("%02d", quarter, type_=String))
    return func.date_trunc("hour", e.created_at) + func.floor(
        func.extract("minute", e.created_at) / 15
    ) * text("interval '15 minutes'")


def as_instant(value: Any) -> datetime:
    """A :func:`quarter_hour` value as an aware UTC instant."""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


async def spend_buckets(engine: AsyncEngine, since: datetime) -> list[SpendBucketRow]:
    """Settled spend per provider, model, data class, month (the rows') and quarter
    hour (UTC) of rows written at or after ``since``: enough for a budget's filters and
    any period's bounds in any time zone (offsets are multiples of 15 minutes)."""
    e = LedgerEntry
    keys = (e.provider, e.model, e.data_class, e.period, quarter_hour(engine))
    query = (
        select(*keys, func.sum(e.cost_usd))
        .where(e.created_at >= since, e.cost_usd > 0)
        .group_by(*keys)
    )
    async with engine.connect() as connection:
        rows = list(await connection.execute(query))
    return [(p, m, c, month, as_instant(at), total) for p, m, c, month, at, total in rows]
