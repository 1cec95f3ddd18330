"""The values a budget book hands out and keeps: accounts, reservations, refusals.

Split from :mod:`aegis.sidecar.budgets.book` to keep the book itself readable; see
that module for the invariants.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from ..contract import BudgetSpec
from ..contract.money import ZERO
from ..routing.ports import BUDGET_EXCEEDED
from .sources import Allowance

# -- book state -------------------------------------------------------------------


class Account:
    """One budget in one period, as seen by one book."""

    __slots__ = ("allowance", "budget", "held", "period", "reserved", "settled")

    def __init__(self, budget: BudgetSpec, period: str, allowance: Allowance) -> None:
        self.budget = budget
        self.period = period
        self.allowance = allowance
        self.held = allowance.held
        self.settled = ZERO
        self.reserved = ZERO

    def fits(self, amount: Decimal) -> bool:
        return self.settled + self.reserved + amount <= self.held

    def unused(self) -> Decimal:
        """Held money neither settled nor reserved."""
        return max(self.held - self.settled - self.reserved, ZERO)

    def snapshot(self) -> BudgetSnapshot:
        limit = self.budget.limit_usd
        spent = self.allowance.spent_elsewhere + self.settled
        committed = spent + self.reserved
        return BudgetSnapshot(
            name=self.budget.name,
            provider=self.budget.provider,
            period=self.period,
            limit=limit,
            spent=spent,
            reserved=self.reserved,
            remaining=max(limit - committed, ZERO),
            utilisation=committed / limit if limit > 0 else Decimal(1),
            available=self.unused(),
        )


class ReservationState(StrEnum):
    OPEN = "open"
    SETTLED = "settled"
    RELEASED = "released"


class Reservation:
    """Money set aside for one call. ``period`` is what the ledger row records."""

    __slots__ = ("accounts", "amount", "period", "provider", "state")

    def __init__(
        self, provider: str, period: str, amount: Decimal, accounts: list[Account]
    ) -> None:
        self.provider = provider
        self.period = period
        self.amount = amount
        self.state = ReservationState.OPEN
        self.accounts = accounts  # those of the budgets it is charged to

    @property
    def budgets(self) -> tuple[str, ...]:
        """Names of the budgets this reservation is charged to."""
        return tuple(a.budget.name for a in self.accounts)

    def __repr__(self) -> str:
        return (
            f"Reservation({self.provider!r}, {self.period!r}, {self.amount}, "
            f"{self.state.value}, budgets={self.budgets})"
        )


@dataclass(frozen=True, slots=True)
class Exceeded:
    """``reserve`` refused: ``budget`` (the first, in config order, that could not
    cover the amount) decides between ``FallbackLocal`` and ``Reject``; ``reason``
    is ``budget`` (not enough money) or ``budget_unavailable`` (the shared ledger
    is unreachable, so the book fails closed)."""

    budget: BudgetSpec
    period: str
    available: Decimal
    needed: Decimal = ZERO
    reason: str = BUDGET_EXCEEDED


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """One budget's current period, for metrics, ``/readyz`` and status."""

    name: str
    provider: str
    period: str
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    remaining: Decimal
    utilisation: Decimal  # (spent + reserved) / limit; 1 for a zero limit
    available: Decimal  # what this sidecar may still reserve (its held slice)
