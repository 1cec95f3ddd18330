"""The values a budget book hands out and keeps: accounts, reservations, refusals.

Split from :mod:`aegis.sidecar.budgets.book` to keep the book itself readable; see
that module for the invariants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from ..contract import BudgetSpec
from ..contract.money import ZERO
from ..routing.ports import BUDGET_EXCEEDED

# -- book state -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Allowance:
    """What a source grants an account when it opens.

    ``spent_elsewhere``: settled spend the account did not make itself (the ledger
    at start, other processes); ``held``: money the account may commit.
    """

    spent_elsewhere: Decimal
    held: Decimal


class Account:
    """One budget in one period, as seen by one book; ``key`` is the budget's
    ledger key (``Scope/namespace/name``)."""

    __slots__ = ("allowance", "budget", "ceiling", "held", "key", "period", "reserved", "settled")

    def __init__(self, budget: BudgetSpec, key: str, period: str, allowance: Allowance) -> None:
        self.budget = budget
        self.key = key
        self.period = period
        self.allowance = allowance
        self.held = allowance.held
        self.settled = ZERO
        self.reserved = ZERO
        # At most this much committed (settled plus reserved), whatever is held: what
        # a lease source told the database this sidecar may commit before its next
        # report (None: no such bound).
        self.ceiling: Decimal | None = None

    def fits(self, amount: Decimal) -> bool:
        committed = self.settled + self.reserved + amount
        return committed <= self.held and (self.ceiling is None or committed <= self.ceiling)

    def unused(self) -> Decimal:
        """Held money neither settled nor reserved."""
        return max(self.held - self.settled - self.reserved, ZERO)

    def snapshot(self) -> BudgetSnapshot:
        limit = self.budget.limit_usd
        spent = self.allowance.spent_elsewhere + self.settled
        committed = spent + self.reserved
        return BudgetSnapshot(
            name=self.budget.name,
            key=self.key,
            provider=",".join(self.budget.provider_names) or "*",
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
    """Money set aside for one call, in every budget that applies to it (each in its
    own period: ``accounts``). ``period`` is the month the ledger row records; the
    row's charges (:attr:`charges`) name each budget's own period."""

    __slots__ = (
        "accounts",
        "amount",
        "at",
        "data_class",
        "models",
        "notified",
        "period",
        "provider",
        "state",
    )

    def __init__(
        self,
        provider: str,
        period: str,
        amount: Decimal,
        accounts: list[Account],
        *,
        at: datetime | None = None,
        models: tuple[str, ...] = (),
        data_class: str | None = None,
    ) -> None:
        self.provider = provider
        self.period = period
        self.amount = amount
        self.state = ReservationState.OPEN
        self.accounts = accounts  # those of the budgets it is charged to
        self.at = at  # the instant it was reserved at (its periods')
        self.models = models
        self.data_class = data_class
        self.notified: tuple[str, ...] = ()  # Notify budgets it went ahead beyond

    @property
    def budgets(self) -> tuple[str, ...]:
        """Names of the budgets this reservation is charged to."""
        return tuple(a.budget.name for a in self.accounts)

    @property
    def charges(self) -> str:
        """What the ledger row is charged to: ``Scope/namespace/name@period``, one per
        budget, comma-separated (``aegis.ledger_write`` settles each in its lease)."""
        return ",".join(f"{a.key}@{a.period}" for a in self.accounts)

    def __repr__(self) -> str:
        return (
            f"Reservation({self.provider!r}, {self.period!r}, {self.amount}, "
            f"{self.state.value}, budgets={self.budgets})"
        )


@dataclass(frozen=True, slots=True)
class Exceeded:
    """``reserve`` refused: ``budget`` (the first, in config order, that could not
    cover the amount and is not ``Notify``) decides between ``FallbackLocal`` and
    ``Reject``; ``reason``
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
    key: str  # the ledger key, Scope/namespace/name: names alone may repeat across scopes
    provider: str  # the providers the budget names, comma-separated; "*": every cloud one
    period: str
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    remaining: Decimal
    utilisation: Decimal  # (spent + reserved) / limit; 1 for a zero limit
    available: Decimal  # what this sidecar may still reserve (its held slice)
