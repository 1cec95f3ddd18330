"""The budget invariant under random interleavings: spent + reserved <= limit.

A hypothesis state machine drives a BudgetBook with reservations, settlements,
releases, out-of-order timestamps, month changes and limit increases, and checks
every decision against an independent model. An asyncio test runs 200
concurrent "calls" through a book and a real SQLite ledger.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)
from msgspec.structs import replace

from aegis.sidecar.budgets import BudgetBook, Exceeded, Reservation
from aegis.sidecar.contract import BudgetSpec
from aegis.sidecar.contract.money import MICRO
from aegis.sidecar.ledger.models import Status
from aegis.sidecar.ledger.store import LedgerStore
from tests.sidecar.ledger_helpers import budget, record, sqlite_url

money = st.decimals(min_value=0, max_value=6, places=6, allow_nan=False, allow_infinity=False)
PROVIDERS = ("openai", "dashscope", "local")


def model_period(instant: datetime, tz: str) -> str:
    return instant.astimezone(ZoneInfo(tz)).strftime("%Y-%m")


class BudgetMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    @initialize(a=money, b=money, c=money)
    def setup(self, a: Decimal, b: Decimal, c: Decimal) -> None:
        self.now = datetime(2026, 10, 31, 20, 0, tzinfo=UTC)
        self.specs = [
            budget("a", "openai", str(a)),
            budget("b", "openai", str(b)),
            budget("c", "dashscope", str(c), timezone="America/New_York"),
        ]
        self.book = BudgetBook(self.specs, clock=lambda: self.now)
        self.spent: dict[tuple[str, str], Decimal] = {}
        self.held: dict[tuple[str, str], Decimal] = {}
        self.charged: dict[int, tuple[Decimal, list[tuple[str, str]]]] = {}

    def budgets_of(self, provider: str) -> list[BudgetSpec]:
        return [b for b in self.specs if b.provider == provider]

    @rule(
        target=reservations,
        provider=st.sampled_from(PROVIDERS),
        amount=money,
        skew=st.integers(0, 7200),
    )
    def reserve(self, provider: str, amount: Decimal, skew: int) -> Reservation | None:
        stamp = self.now - timedelta(seconds=skew)  # calls are stamped out of order
        keys = [(b.name, model_period(stamp, b.timezone)) for b in self.budgets_of(provider)]
        limits = {b.name: b.limit_usd for b in self.budgets_of(provider)}
        fits = all(
            self.spent.get(k, 0) + self.held.get(k, 0) + amount <= limits[k[0]] for k in keys
        )
        result = self.book.reserve(provider, amount, stamp)
        assert isinstance(result, Reservation) == fits, (result, keys)
        if isinstance(result, Exceeded):
            return None
        for k in keys:
            self.held[k] = self.held.get(k, Decimal(0)) + amount
        self.charged[id(result)] = (amount, keys)
        return result

    @rule(reservation=consumes(reservations), fraction=st.fractions(0, 1))
    def settle(self, reservation: Reservation | None, fraction: object) -> None:
        if reservation is None:
            return
        amount, keys = self.charged.pop(id(reservation))
        actual = (amount * Decimal(fraction.numerator) / Decimal(fraction.denominator)).quantize(  # type: ignore[attr-defined]
            MICRO, ROUND_HALF_UP
        )
        assert self.book.settle(reservation, actual) == actual
        for k in keys:
            self.held[k] -= amount
            self.spent[k] = self.spent.get(k, Decimal(0)) + actual

    @rule(reservation=consumes(reservations))
    def release(self, reservation: Reservation | None) -> None:
        if reservation is None:
            return
        amount, keys = self.charged.pop(id(reservation))
        self.book.release(reservation)
        for k in keys:
            self.held[k] -= amount

    @rule(minutes=st.integers(0, 24 * 60))
    def advance(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule(name=st.sampled_from("abc"), extra=money)
    def raise_limit(self, name: str, extra: Decimal) -> None:
        self.specs = [
            replace(b, limit_usd=b.limit_usd + extra) if b.name == name else b for b in self.specs
        ]
        self.book.reconfigure(self.specs)

    @invariant()
    def never_over_the_limit(self) -> None:
        if not hasattr(self, "book"):
            return
        limits = {b.name: b.limit_usd for b in self.specs}
        for key in set(self.spent) | set(self.held):
            total = self.spent.get(key, 0) + self.held.get(key, 0)
            assert total <= limits[key[0]], (key, total)

    @invariant()
    def book_agrees_with_the_model(self) -> None:
        if not hasattr(self, "book"):
            return
        for snap in self.book.snapshot(self.now):
            key = (snap.name, snap.period)
            assert snap.spent == self.spent.get(key, 0)
            assert snap.reserved == self.held.get(key, 0)
            assert snap.spent + snap.reserved <= snap.limit
            assert snap.remaining == snap.limit - snap.spent - snap.reserved


TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


async def test_concurrent_calls_never_overspend_and_the_ledger_agrees(tmp_path: Path) -> None:
    limit = Decimal("5")
    rng = random.Random(4)
    charged: list[Decimal] = []
    refused: list[int] = []
    async with LedgerStore(sqlite_url(tmp_path), batch_size=64, flush_interval=0.01) as store:
        book = BudgetBook([budget("tight", "openai", str(limit))])

        def check() -> None:
            [snap] = book.snapshot()
            assert snap.spent + snap.reserved <= limit

        async def call(i: int) -> None:
            await asyncio.sleep(rng.random() / 5)  # deliberate pacing: arrivals spread over 200 ms
            worst = Decimal(rng.randint(10_000, 200_000)) * MICRO
            result = book.reserve("openai", worst)
            check()
            if isinstance(result, Exceeded):
                refused.append(i)
                store.append(record(i, provider="openai", status=Status.REFUSED, cost_usd=0))
                return
            await asyncio.sleep(rng.random() / 50)  # deliberate pacing: the upstream call
            if rng.random() < 0.1:
                book.release(result)  # failed or cancelled
                cost = Decimal(0)
            else:
                actual = worst * Decimal(rng.randint(0, 100)) / 100
                cost = book.settle(result, actual)
                charged.append(cost)
            check()
            store.append(record(i, provider="openai", period=result.period, cost_usd=cost))

        await asyncio.gather(*(call(i) for i in range(200)))
        total = await store.spent("openai", book.period("openai"))
    assert book.outstanding == 0
    assert total == sum(charged) == book.snapshot()[0].spent
    assert total <= limit
    assert refused  # the budget was actually contended
    assert total > limit * Decimal("0.8")
