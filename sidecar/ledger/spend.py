"""Settled spend per provider and month: what a standalone budget book starts from."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..contract.periods import check_period
from .models import LedgerEntry


async def spend_by_period(
    engine: AsyncEngine,
    providers: Iterable[str] | None = None,
    since_period: str | None = None,
    until_period: str | None = None,
) -> dict[tuple[str, str], Decimal]:
    """Settled spend per (provider, period), for periods in the inclusive range.

    Filtering by provider keeps this on ``ix_ledger_entries_provider_period_cost_usd``.
    """
    e = LedgerEntry
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
