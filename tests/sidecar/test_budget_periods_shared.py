"""Budget periods and filters on the shared ledger (real PostgreSQL, frozen clocks).

- ``aegis.ledger_write`` (migration 0009) settles each charge
  ``Scope/namespace/name@period`` into that budget's lease of that period; a charge
  without ``@`` (spooled before the upgrade) uses the row's period.
- Two sidecars spend a Daily and a Monthly budget on one provider: both limits hold,
  each in its own period keys, across a midnight in the budgets' time zone.
- A Notify budget lets calls go on past its limit: counted by the book, visible in
  the ledger's budget status (spent over the limit, the excess as overdraft).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aegis.sidecar.budgets import BudgetBook, LeaseBudgetSource, LeaseSettings, Reservation
from aegis.sidecar.contract import BudgetSpec, decode
from aegis.sidecar.ledger.budget_status import budget_status
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.spool import Spool
from aegis.sidecar.ledger.store import LedgerStore
from aegis.sidecar.runtime.wiring import open_budgets
from tests.sidecar.ledger_helpers import record
from tests.sidecar.shared_helpers import fetch, poll_until, write_rows
from tests.sidecar.tenancy import key, provision

pytestmark = pytest.mark.postgres

D = Decimal
LA = "America/Los_Angeles"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def spec(name: str, limit: str, period: str, **extra: Any) -> BudgetSpec:
    return decode(
        BudgetSpec,
        {"name": name, "provider": "dashscope", "limitUSD": limit, "period": period, **extra},
    )


async def test_ledger_write_settles_each_charge_in_its_own_period(pg_url: str) -> None:
    await provision(pg_url, "ns", [("daily", "dashscope", "5"), ("monthly", "dashscope", "50")])
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            rows = [
                record(1, period="2026-12", cost_usd=D("0.5")),
                record(2, period="2026-12", cost_usd=D("0.25")),
                record(3, period="2026-12", cost_usd=D("1")),  # an old spool: no "@"
                record(4, period="2026-12", cost_usd=D("2")),  # not a key: the row's period
            ]
            charges = [
                "Namespace/ns/daily@2026-12-05,Namespace/ns/monthly@2026-12",
                "Namespace/ns/daily@2026-12-06,Namespace/ns/monthly@2026-12",
                "Namespace/ns/monthly",
                "Namespace/ns/daily@2026-13-99",
            ]
            assert await write_rows(conn, "ns/pod-a", rows, charges) == 4
            # A replay inserts nothing and charges nothing.
            assert await write_rows(conn, "ns/pod-a", rows, charges) == 0
    finally:
        await engine.dispose()
    leases = await fetch(
        pg_url,
        "SELECT budget_name, period, settled_usd FROM aegis.budget_leases "
        "WHERE holder = 'ns/pod-a' ORDER BY 1, 2",
    )
    assert leases == [
        ("daily", "2026-12", D(2)),
        ("daily", "2026-12-05", D("0.5")),
        ("daily", "2026-12-06", D("0.25")),
        ("monthly", "2026-12", D("1.75")),
    ]
    [status] = await budget_status(pg_url, "2026-12-05", budget=key("daily"))
    assert (status.period, status.kind.value, status.spent_usd) == ("2026-12-05", "Daily", D("0.5"))


class Sidecar:
    def __init__(self, store: LedgerStore, book: BudgetBook, source: LeaseBudgetSource) -> None:
        self.store, self.book, self.source = store, book, source

    async def call(self, cost: str, clock: Clock) -> bool:
        """One call of ``cost`` (its worst case too): reserved, settled, recorded."""
        outcome = await self.book.acquire("dashscope", D(cost), models=("qwen-plus",))
        if not isinstance(outcome, Reservation):
            return False
        charged = self.book.settle(outcome, D(cost))
        row = record(
            0,
            request_id=uuid.uuid4().hex,
            created_at=clock.now,
            period=outcome.period,
            cost_usd=charged,
        )
        self.store.append(row, outcome.charges)
        return True


@pytest.fixture
async def pair(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Clock, list[Sidecar]]]:
    await provision(pg_url, "ns", [("daily", "dashscope", "1"), ("monthly", "dashscope", "1.5")])
    clock = Clock(datetime(2026, 12, 1, 7, 0, tzinfo=UTC))  # 23:00 on 30 Nov in LA
    budgets = [
        spec("daily", "1", "Daily", timezone=LA, onExceeded="Reject"),
        spec("monthly", "1.5", "Monthly", timezone=LA, onExceeded="Reject"),
    ]
    sidecars = []
    for pod in ("pod-a", "pod-b"):
        store = LedgerStore(pg_url, spool=Spool(tmp_path / pod), holder=f"ns/{pod}")
        await store.start()
        book, source = await open_budgets(
            budgets, store, settings=LeaseSettings(tick=0.01), clock=clock
        )
        assert source is not None
        sidecars.append(Sidecar(store, book, source))
    yield clock, sidecars
    for sidecar in sidecars:
        await sidecar.source.aclose()
        await sidecar.store.aclose()


async def spend_until_refused(sidecars: list[Sidecar], clock: Clock, cost: str) -> Decimal:
    """Both sidecars call in turn until both are refused; what they spent."""
    spent = D(0)
    refused: set[int] = set()
    for turn in range(1000):
        i = turn % 2
        if i in refused:
            continue
        if await sidecars[i].call(cost, clock):
            spent += D(cost)
        else:
            refused.add(i)
        if len(refused) == 2:
            return spent
    raise AssertionError("never refused")


async def test_two_sidecars_daily_and_monthly_budgets_both_hold(
    pair: tuple[Clock, list[Sidecar]], pg_url: str
) -> None:
    """Daily 1 USD and Monthly 1.5 USD on one provider, in Los Angeles time."""
    clock, sidecars = pair
    # 30 November: the Daily budget is what stops them (November's month has 1.5).
    first = await spend_until_refused(sidecars, clock, "0.07")
    assert D("0.7") <= first <= D(1)
    # Midnight in LA (08:00 UTC): a new day and a new month, each with its whole limit.
    clock.now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    second = await spend_until_refused(sidecars, clock, "0.07")
    assert D("0.7") <= second <= D(1)
    # 2 December: a new day, but December has at most 0.5 USD left: the Monthly stops it.
    clock.now = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    third = await spend_until_refused(sidecars, clock, "0.07")
    assert second + third <= D("1.5")
    assert third <= D("0.8")  # the day's limit (1) would have allowed more
    for sidecar in sidecars:
        await sidecar.store.flush()
        assert sidecar.book.overruns == 0

    async def all_settled() -> bool:
        rows = await fetch(pg_url, "SELECT sum(settled_usd) FROM aegis.budget_leases")
        return bool(rows[0][0] == 2 * (first + second + third))

    await poll_until(all_settled)
    periods = await fetch(
        pg_url,
        "SELECT p.budget_name, p.period, p.limit_usd, p.overdraft_usd, sum(l.settled_usd) "
        "FROM aegis.budget_periods p JOIN aegis.budget_leases l "
        "USING (budget_scope, budget_namespace, budget_name, period) "
        "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2",
    )
    settled = {(name, period): total for name, period, _, _, total in periods}
    assert settled == {
        ("daily", "2026-11-30"): first,
        ("daily", "2026-12-01"): second,
        ("daily", "2026-12-02"): third,
        ("monthly", "2026-11"): first,
        ("monthly", "2026-12"): second + third,
    }
    for name, period, limit, overdraft, total in periods:
        assert total <= limit, (name, period)
        assert overdraft == 0, (name, period)


async def test_notify_lets_calls_go_on_counts_them_and_shows_in_status(
    pg_url: str, tmp_path: Path
) -> None:
    await provision(pg_url, "ns", [("watch", "dashscope", "1")])
    clock = Clock(datetime(2026, 12, 5, 12, 0, tzinfo=UTC))
    store = LedgerStore(pg_url, spool=Spool(tmp_path / "spool"), holder="ns/pod-n")
    await store.start()
    book, source = await open_budgets(
        [spec("watch", "1", "Weekly", onExceeded="Notify")],
        store,
        settings=LeaseSettings(tick=0.01),
        clock=clock,
    )
    assert source is not None
    sidecar = Sidecar(store, book, source)
    try:
        for _ in range(15):  # 1.5 USD against a 1 USD weekly limit: none refused
            assert await sidecar.call("0.1", clock)
        assert sum(book.notified.values()) >= 5
        assert set(book.notified) == {"Namespace/ns/watch"}
        await store.flush()
    finally:
        await source.aclose()
        await store.aclose()
    [status] = await budget_status(pg_url, budget=key("watch"))
    assert (status.period, status.kind.value) == ("2026-W49", "Weekly")
    assert status.spent_usd == D("1.5")
    assert status.exceeded
    # Leases never grant past the limit: what was spent beyond it arrived as overdraft.
    assert status.overdraft_usd >= D("0.5")


async def test_a_new_day_is_a_new_key_while_yesterday_settles(pg_url: str, tmp_path: Path) -> None:
    """A call reserved at 23:59:59 (LA) and settled after midnight is charged to the
    day (and month) it was reserved in; the new day starts with the whole limit."""
    await provision(pg_url, "ns", [("daily", "dashscope", "1")])
    clock = Clock(datetime(2026, 11, 30, 7, 59, 59, tzinfo=UTC))  # 23:59:59 on the 29th
    store = LedgerStore(pg_url, spool=Spool(tmp_path / "spool"), holder="ns/pod-d")
    await store.start()
    book, source = await open_budgets(
        [spec("daily", "1", "Daily", timezone=LA, onExceeded="Reject")],
        store,
        settings=LeaseSettings(tick=0.01),
        clock=clock,
    )
    assert source is not None
    try:
        late = await book.acquire("dashscope", D("0.9"))
        assert isinstance(late, Reservation)
        assert late.charges == "Namespace/ns/daily@2026-11-29"
        clock.now += timedelta(seconds=1)
        fresh = await book.acquire("dashscope", D("1"))  # the 30th: the whole limit
        assert isinstance(fresh, Reservation)
        assert fresh.charges == "Namespace/ns/daily@2026-11-30"
        for reservation in (late, fresh):
            row = record(
                0,
                request_id=uuid.uuid4().hex,
                created_at=clock.now,
                period=reservation.period,
                cost_usd=book.settle(reservation, reservation.amount),
            )
            store.append(row, reservation.charges)
        await store.flush()
    finally:
        await source.aclose()
        await store.aclose()
    rows = await fetch(
        pg_url,
        "SELECT period, sum(settled_usd) FROM aegis.budget_leases GROUP BY 1 ORDER BY 1",
    )
    assert rows == [("2026-11-29", D("0.9")), ("2026-11-30", D(1))]
