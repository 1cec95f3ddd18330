"""Acceptance: a calendar-month change under way, with an injected clock.

Requests reserved before midnight and settled after it stay in the old month
(the row's period is the reservation's); the new month is a new (budget,
period) row, so it starts with the whole limit without any reset job, while the
old month keeps its own, nearly spent, lease.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aegis.sidecar.budgets import BudgetBook, Exceeded, LeaseSettings, Reservation
from aegis.sidecar.ledger.models import LedgerRecord
from aegis.sidecar.ledger.spool import Spool
from aegis.sidecar.ledger.store import LedgerStore
from aegis.sidecar.runtime.wiring import open_budgets
from tests.sidecar.ledger_helpers import budget, record
from tests.sidecar.shared_helpers import fetch, poll_until
from tests.sidecar.tenancy import provision

pytestmark = pytest.mark.postgres

D = Decimal


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def store(pg_url: str, tmp_path: Path) -> AsyncIterator[LedgerStore]:
    await provision(pg_url, "ns", [("dash", "dashscope", "1")])
    ledger = LedgerStore(pg_url, spool=Spool(tmp_path / "spool"), holder="ns/pod-m")
    await ledger.start()
    yield ledger
    await ledger.aclose()


def row(clock: Clock, reservation: Reservation, cost: Decimal) -> LedgerRecord:
    return record(
        0,
        request_id=uuid.uuid4().hex,
        created_at=clock.now,
        period=reservation.period,
        cost_usd=cost,
    )


async def spend(book: BudgetBook, amount: str) -> Reservation:
    outcome = await book.acquire("dashscope", D(amount))
    assert isinstance(outcome, Reservation), outcome
    return outcome


async def test_requests_straddling_midnight_land_in_their_month(
    store: LedgerStore, pg_url: str
) -> None:
    clock = Clock(datetime(2026, 10, 31, 23, 59, 50, tzinfo=UTC))
    book, source = await open_budgets(
        [budget("dash", "dashscope", "1")], store, settings=LeaseSettings(tick=0.01), clock=clock
    )
    assert source is not None
    try:
        # October: spend 0.9 of the 1 USD limit.
        for _ in range(3):
            reservation = await spend(book, "0.3")
            store.append(row(clock, reservation, book.settle(reservation, D("0.3"))))
        late = await spend(book, "0.05")  # reserved at 23:59:59, settled after midnight
        clock.now += timedelta(seconds=9, milliseconds=500)
        assert isinstance(await book.acquire("dashscope", D("0.2")), Exceeded)

        clock.now = datetime(2026, 11, 1, 0, 0, 1, tzinfo=UTC)
        # November: the whole limit, although October is nearly spent.
        november = await spend(book, "0.95")
        store.append(row(clock, november, book.settle(november, D("0.95"))))
        store.append(row(clock, late, book.settle(late, D("0.04"))))
        assert late.period == "2026-10"
        await store.flush()
        # October has nothing in flight any more: its lease is handed back and closed.
        await poll_until(lambda: all(s["period"] == "2026-11" for s in source.describe()))
        # the close statement may still be on its way to the database: wait for it there
        expected = [("2026-10", "closed"), ("2026-11", "open")]
        leases: list[Any] = []
        async with asyncio.timeout(10):
            while leases != expected:
                leases = await fetch(
                    pg_url, "SELECT period, state FROM aegis.budget_leases ORDER BY 1"
                )
                await asyncio.sleep(0.02)  # poll; the deadline is the timeout above
        assert leases == expected
    finally:
        await source.aclose()

    rows = await fetch(
        pg_url, "SELECT period, created_at, cost_usd FROM aegis.ledger_entries ORDER BY created_at"
    )
    assert [(p, c) for p, _, c in rows] == [
        ("2026-10", D("0.3")),
        ("2026-10", D("0.3")),
        ("2026-10", D("0.3")),
        ("2026-11", D("0.95")),
        ("2026-10", D("0.04")),  # created in November, charged to October
    ]
    assert rows[-1][1].month == 11
    periods = await fetch(
        pg_url,
        "SELECT p.period, p.limit_usd, p.committed_usd, sum(l.settled_usd) "
        "FROM aegis.budget_periods p JOIN aegis.budget_leases l "
        "USING (budget_scope, budget_namespace, budget_name, period) "
        "GROUP BY p.period, p.limit_usd, p.committed_usd ORDER BY p.period",
    )
    assert periods == [
        ("2026-10", D(1), D("0.94"), D("0.94")),
        ("2026-11", D(1), D("0.95"), D("0.95")),
    ]
