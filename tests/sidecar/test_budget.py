"""BudgetBook: reservations, settlement, periods, time zones, reconfigure, the source seam."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from aegis.sidecar.budgets import (
    Allowance,
    BudgetBook,
    Exceeded,
    LocalBudgetSource,
    Reservation,
    ReservationState,
)
from aegis.sidecar.contract import BudgetSpec
from aegis.sidecar.ledger.store import LedgerStore
from aegis.sidecar.routing.ports import BudgetView
from tests.sidecar.ledger_helpers import budget, record, sqlite_url

D = Decimal
NOV = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
B = "Namespace//b"  # budget b's ledger key in a book without a namespace


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def reserved(result: Reservation | Exceeded) -> Reservation:
    assert isinstance(result, Reservation), result
    return result


def snap(book: BudgetBook, name: str, now: datetime | None = None) -> tuple[object, ...]:
    [s] = [s for s in book.snapshot(now) if s.name == name]
    return (s.spent, s.reserved, s.remaining)


def test_reserve_settle_release() -> None:
    book = BudgetBook([budget("dash", "dashscope", "10")], clock=Clock(NOV))
    r1 = reserved(book.reserve("dashscope", D("4")))
    r2 = reserved(book.reserve("dashscope", D("5")))
    assert (r1.period, r1.budgets) == ("2026-11", ("dash",))
    assert snap(book, "dash") == (0, 9, 1)
    refused = book.reserve("dashscope", D("1.000001"))
    assert isinstance(refused, Exceeded)
    assert (refused.budget.name, refused.period, refused.available) == ("dash", "2026-11", D(1))
    assert book.settle(r1, D("1.5")) == D("1.5")  # cheaper than the worst case
    assert snap(book, "dash") == (D("1.5"), 5, D("3.5"))
    book.release(r2)
    assert snap(book, "dash") == (D("1.5"), 0, D("8.5"))
    assert book.outstanding == 0
    assert (r1.state, r2.state) == (ReservationState.SETTLED, ReservationState.RELEASED)


def test_exact_fit_and_zero_amounts() -> None:
    book = BudgetBook([budget("b", "openai", "1")], clock=Clock(NOV))
    full = reserved(book.reserve("openai", D("1")))
    assert isinstance(book.reserve("openai", D("0.000001")), Exceeded)
    book.settle(full, D("1"))
    zero = reserved(book.reserve("openai", D(0)))  # a free call still fits an empty budget
    book.settle(zero, D(0))
    [s] = book.snapshot()
    assert (s.spent, s.remaining, s.utilisation, s.available) == (D(1), D(0), D(1), D(0))


def test_providers_without_budgets_are_free_and_use_utc_periods() -> None:
    book = BudgetBook([budget("b", "openai", "1", timezone="America/New_York")])
    free = reserved(book.reserve("local", D("1000"), datetime(2026, 12, 1, 1, tzinfo=UTC)))
    assert (free.period, free.budgets) == ("2026-12", ())
    assert book.settle(free, D("0.5")) == D("0.5")
    assert book.period("openai", datetime(2026, 12, 1, 1, tzinfo=UTC)) == "2026-11"


def test_every_budget_of_the_provider_must_cover_all_or_nothing() -> None:
    book = BudgetBook(
        [budget("big", "openai", "100"), budget("small", "openai", "2")], clock=Clock(NOV)
    )
    r = reserved(book.reserve("openai", D("1.5")))
    assert r.budgets == ("big", "small")
    refused = book.reserve("openai", D("1"))
    assert isinstance(refused, Exceeded) and refused.budget.name == "small"
    # the refused attempt reserved nothing anywhere
    assert snap(book, "big") == (0, D("1.5"), D("98.5"))
    book.settle(r, D("1"))
    assert snap(book, "big") == (1, 0, 99)
    assert snap(book, "small") == (1, 0, 1)


def test_amounts_are_rounded_to_micro_dollars_safely() -> None:
    book = BudgetBook([budget("b", "openai", "1")], clock=Clock(NOV))
    r = reserved(book.reserve("openai", D("0.0000001")))
    assert r.amount == D("0.000001")  # a worst case rounds up
    assert book.settle(r, D("0.00000049")) == 0  # a cost rounds like the ledger
    with pytest.raises(ValueError, match="negative"):
        book.reserve("openai", D("-1"))
    with pytest.raises(TypeError, match="Decimal"):
        book.reserve("openai", 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        book.reserve("openai", D("NaN"))


def test_overrun_is_counted_not_hidden() -> None:
    book = BudgetBook([budget("b", "openai", "1")], clock=Clock(NOV))
    r = reserved(book.reserve("openai", D("0.5")))
    assert book.settle(r, D("1.2")) == D("1.2")
    assert (book.overruns, book.overrun_usd) == (1, D("0.7"))
    assert snap(book, "b") == (D("1.2"), 0, 0)
    assert isinstance(book.reserve("openai", D(0)), Exceeded)


def test_settle_and_release_are_single_use() -> None:
    book = BudgetBook([budget("b", "openai", "1")], clock=Clock(NOV))
    r = reserved(book.reserve("openai", D("0.5")))
    book.settle(r, D("0.1"))
    book.release(r)  # a `finally: release()` after settle is harmless
    with pytest.raises(ValueError, match="settled"):
        book.settle(r, D("0.1"))
    assert snap(book, "b") == (D("0.1"), 0, D("0.9"))


def test_month_boundary_charges_the_reserving_month_and_starts_full() -> None:
    clock = Clock(datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC))
    book = BudgetBook([budget("b", "openai", "10")], clock=clock)
    october = reserved(book.reserve("openai", D("8")))
    assert october.period == "2026-10"
    clock.now = datetime(2026, 11, 1, 0, 0, 1, tzinfo=UTC)
    november = reserved(book.reserve("openai", D("10")))  # a new month: the whole limit
    assert november.period == "2026-11"
    assert book.settle(october, D("7")) == 7  # settled in November, charged to October
    assert snap(book, "b") == (0, 10, 0)
    assert snap(book, "b", datetime(2026, 10, 15, tzinfo=UTC)) == (7, 0, 3)
    book.release(november)
    assert snap(book, "b") == (0, 0, 10)


def test_calls_arriving_out_of_order_around_midnight() -> None:
    book = BudgetBook([budget("b", "openai", "10")])
    late = datetime(2026, 11, 1, 0, 0, 1, tzinfo=UTC)
    early = datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)
    november = reserved(book.reserve("openai", D("6"), late))
    october = reserved(book.reserve("openai", D("9"), early))  # stamped before midnight
    again = book.reserve("openai", D("5"), late)
    assert isinstance(again, Exceeded)  # November still counts its first reservation
    book.settle(october, D("9"))
    book.settle(november, D("6"))
    assert snap(book, "b", late) == (6, 0, 4)
    assert snap(book, "b", early) == (9, 0, 1)


@pytest.mark.parametrize(
    ("tz", "instant", "period"),
    [
        ("UTC", datetime(2026, 11, 1, 0, 0, tzinfo=UTC), "2026-11"),
        ("America/New_York", datetime(2026, 11, 1, 3, 59, tzinfo=UTC), "2026-10"),
        ("America/New_York", datetime(2026, 11, 1, 4, 0, tzinfo=UTC), "2026-11"),
        ("Pacific/Auckland", datetime(2026, 11, 30, 10, 59, tzinfo=UTC), "2026-11"),
        ("Pacific/Auckland", datetime(2026, 11, 30, 11, 0, tzinfo=UTC), "2026-12"),
        ("Asia/Kolkata", datetime(2026, 12, 31, 18, 30, tzinfo=UTC), "2027-01"),
    ],
)
def test_periods_follow_the_budget_time_zone(tz: str, instant: datetime, period: str) -> None:
    book = BudgetBook([budget("b", "openai", "10", timezone=tz)])
    assert book.period("openai", instant) == period
    assert reserved(book.reserve("openai", D(1), instant)).period == period


def test_unknown_time_zone_is_refused_before_anything_changes() -> None:
    book = BudgetBook([budget("b", "openai", "10")], clock=Clock(NOV))
    r = reserved(book.reserve("openai", D(4)))
    with pytest.raises(ValueError, match="time zone"):
        book.reconfigure([budget("b", "openai", "10", timezone="Mars/Olympus")])
    book.settle(r, D(4))
    assert snap(book, "b") == (4, 0, 6)
    with pytest.raises(ValueError, match="duplicate"):
        BudgetBook([budget("b", "openai", "1"), budget("b", "dashscope", "1")])
    with pytest.raises(ValueError, match=r"naive|aware"):
        book.reserve("openai", D(1), datetime(2026, 11, 1))


def test_reconfigure_keeps_surviving_budgets() -> None:
    book = BudgetBook(
        [budget("keep", "openai", "10"), budget("drop", "dashscope", "5")], clock=Clock(NOV)
    )
    settled = reserved(book.reserve("openai", D(3)))
    book.settle(settled, D(3))
    inflight = reserved(book.reserve("openai", D(4)))
    book.reconfigure([budget("keep", "openai", "20"), budget("new", "dashscope", "7")])
    assert snap(book, "keep") == (3, 4, 13)  # spend and reservation kept, new limit
    assert [s.name for s in book.snapshot()] == ["keep", "new"]
    book.settle(inflight, D(2))
    assert snap(book, "keep") == (5, 0, 15)
    book.reconfigure([budget("keep", "openai", "4")])  # lowered below what is spent
    assert snap(book, "keep") == (5, 0, 0)
    assert isinstance(book.reserve("openai", D(0)), Exceeded)


def test_a_budget_added_later_counts_earlier_spend_and_calls_in_flight() -> None:
    book = BudgetBook([], clock=Clock(NOV))
    book.settle(reserved(book.reserve("openai", D(3))), D(3))
    inflight = reserved(book.reserve("openai", D(2)))
    book.reconfigure([budget("late", "openai", "10")])
    assert inflight.budgets == ("late",)
    assert snap(book, "late") == (3, 2, 5)
    assert isinstance(book.reserve("openai", D("5.000001")), Exceeded)
    book.settle(inflight, D(1))
    assert snap(book, "late") == (4, 0, 6)
    # renaming a budget is a new budget, but spend of this process still counts
    book.reconfigure([budget("renamed", "openai", "10")])
    assert snap(book, "renamed") == (4, 0, 6)


def test_can_cover_is_the_routers_budget_view() -> None:
    book = BudgetBook(
        [budget("b", "openai", "1", on_exceeded="Reject")],
        clock=Clock(NOV),
    )
    view: BudgetView = book
    assert view.can_cover("openai", D("1")).ok
    assert view.can_cover("local", D("1e9")).ok
    reserved(book.reserve("openai", D("0.6")))
    verdict = view.can_cover("openai", D("0.5"))
    assert not verdict.ok
    assert verdict.budget is not None and verdict.budget.on_exceeded == "Reject"
    assert book.outstanding == 1  # can_cover reserved nothing


async def test_open_loads_settled_spend_from_the_ledger(tmp_path: Path) -> None:
    async with LedgerStore(sqlite_url(tmp_path)) as store:
        store.append(record(1, provider="openai", cost_usd=D("30")))
        store.append(record(2, provider="openai", cost_usd=D("0.000001")))
        store.append(record(3, provider="openai", cost_usd=D("50"), period="2026-10"))
        store.append(record(4, provider="dashscope", cost_usd=D("1")))
        book = await BudgetBook.open(
            [budget("openai", "openai", "80"), budget("dash", "dashscope", "120")],
            store,
            clock=Clock(NOV),
        )
    assert snap(book, "openai") == (D("30.000001"), 0, D("49.999999"))
    assert snap(book, "dash") == (1, 0, 119)
    assert snap(book, "openai", datetime(2026, 10, 2, tzinfo=UTC)) == (50, 0, 30)
    assert isinstance(book.reserve("openai", D(50)), Exceeded)


class LeaseLikeSource:
    """A stand-in for the lease source: holds nothing until granted."""

    def __init__(self) -> None:
        self.short: list[tuple[str, str, Decimal]] = []
        self.settled: list[Decimal] = []

    def open_account(self, budget: BudgetSpec, period: str) -> Allowance:
        return Allowance(spent_elsewhere=D(40), held=D(0))

    def reopen_account(self, budget: BudgetSpec, period: str, allowance: Allowance) -> Decimal:
        return D(0)

    def on_settled(self, reservation: Reservation, amount: Decimal) -> None:
        self.settled.append(amount)

    def on_short(self, budget: BudgetSpec, period: str, needed: Decimal) -> None:
        self.short.append((budget.name, period, needed))

    def may_grant(self, budget: BudgetSpec, period: str, needed: Decimal) -> bool:
        return False

    def refill(self, budget: BudgetSpec, period: str, needed: Decimal) -> Awaitable[None] | None:
        return None

    def on_closed(self, budget: BudgetSpec, period: str, unused: Decimal) -> None:
        return None


def test_the_book_spends_only_what_its_source_grants() -> None:
    source = LeaseLikeSource()
    book = BudgetBook([budget("b", "openai", "100")], source, clock=Clock(NOV))
    assert isinstance(book.reserve("openai", D(1)), Exceeded)
    assert source.short == [("b", "2026-11", D(1))]
    with pytest.raises(KeyError):
        book.grant("b", "2026-11", D(5))  # accounts are named by the budget's key
    book.grant(B, "2026-11", D(5))
    r = reserved(book.reserve("openai", D(4)))
    [s] = book.snapshot()
    assert (s.spent, s.reserved, s.remaining, s.available) == (D(40), D(4), D(56), D(1))
    assert book.surrender(B, "2026-11") == 1  # give back what is not committed
    assert isinstance(book.reserve("openai", D("0.000001")), Exceeded)
    book.settle(r, D(3))
    assert source.settled == [D(3)]
    assert book.surrender(B, "2026-11") == 1
    assert book.surrender(B, "1999-01") == 0
    with pytest.raises(KeyError):
        book.grant(B, "1999-01", D(1))


def test_local_source_is_the_whole_remaining_budget() -> None:
    at = datetime(2026, 11, 5, 10, 15, tzinfo=UTC)
    source = LocalBudgetSource([(("openai", ("gpt-4o",), "internal", "2026-11", at), D("70"))])
    allowance = source.open_account(budget("b", "openai", "80"), "2026-11")
    assert allowance == Allowance(spent_elsewhere=D(70), held=D(10))
    assert source.open_account(budget("b", "openai", "60"), "2026-11").held == 0
    assert source.open_account(budget("b", "openai", "60"), "2026-12").held == 60
    december = datetime(2026, 12, 1, 0, 7, tzinfo=UTC)
    source.on_settled(Reservation("openai", "2026-12", D(1), [], at=december), D("0.5"))
    assert source.spend(budget("b", "openai", "60"), "2026-12") == D("0.5")
    assert source.spend(budget("b", "dashscope", "60"), "2026-12") == 0


def test_snapshot_period_and_timing() -> None:
    clock = Clock(datetime(2026, 11, 30, 23, 0, tzinfo=UTC))
    book = BudgetBook([budget("b", "openai", "8", timezone="Europe/Berlin")], clock=clock)
    [s] = book.snapshot()
    assert s.period == "2026-12"  # already December in Berlin
    clock.now += timedelta(days=1)
    assert book.snapshot()[0].period == "2026-12"
    assert book.snapshot()[0].utilisation == 0
