"""Read-only views of budget and provider health that the router consults.

The router is a pure function; whatever is stateful (the budget ledger and its
leases, the circuit breakers) is handed to it through these two small protocols.
The in-memory implementations here serve tests and anyone who routes without a
ledger. A view is advisory: the real reservation happens when a call is made
and may still fail under concurrency, in which case the caller simply moves on
to the next candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Protocol

from ..contract import BudgetSpec, OnExceeded
from ..values import valueclass

# Why a budget cannot cover a request (also the fallback reason in headers).
BUDGET_EXCEEDED = "budget"
# The shared ledger is unreachable, so no money can be proven available: fail
# closed (the budget's onExceeded decides between local fallback and refusal).
BUDGET_UNAVAILABLE = "budget_unavailable"


@valueclass
class BudgetVerdict:
    """Whether a provider's budgets can cover an amount; ``budget`` names the one that
    cannot and ``reason`` says why (:data:`BUDGET_EXCEEDED` or :data:`BUDGET_UNAVAILABLE`).
    ``period`` and ``available`` (what is left of it), when the view knows them, go
    into the refusal's message."""

    ok: bool
    budget: BudgetSpec | None = None
    reason: str = BUDGET_EXCEEDED
    period: str | None = None
    available: Decimal | None = None

    @classmethod
    def exceeded(
        cls,
        budget: BudgetSpec,
        reason: str = BUDGET_EXCEEDED,
        *,
        period: str | None = None,
        available: Decimal | None = None,
    ) -> BudgetVerdict:
        return cls(ok=False, budget=budget, reason=reason, period=period, available=available)


OK = BudgetVerdict(ok=True)


class BudgetView(Protocol):
    def can_cover(
        self,
        provider: str,
        amount: Decimal,
        *,
        models: Sequence[str] = (),
        data_class: str | None = None,
    ) -> BudgetVerdict:
        """Could every budget that applies to a call of ``provider`` that may use
        ``models``, of ``data_class``, reserve ``amount`` USD right now?"""
        ...


class HealthView(Protocol):
    def is_open(self, provider: str) -> bool:
        """True while the provider's circuit breaker refuses calls (not half-open)."""
        ...


class StaticBudgetView:
    """Remaining USD per budget name, fixed at construction (tests, no-ledger runs).

    A budget missing from ``remaining`` has its whole limit left. When several
    budgets apply (by their filters), the first one (config order) that cannot
    cover wins; a ``Notify`` budget always covers.
    """

    __slots__ = ("_budgets", "_remaining")

    def __init__(
        self, budgets: Iterable[BudgetSpec], remaining: Mapping[str, Decimal] | None = None
    ) -> None:
        self._remaining = dict(remaining or {})
        self._budgets = tuple(budgets)

    def can_cover(
        self,
        provider: str,
        amount: Decimal,
        *,
        models: Sequence[str] = (),
        data_class: str | None = None,
    ) -> BudgetVerdict:
        for budget in self._budgets:
            if budget.on_exceeded is OnExceeded.NOTIFY or not budget.applies(
                provider, models=models, data_class=data_class
            ):
                continue
            left = self._remaining.get(budget.name, budget.limit_usd)
            if amount > left:
                return BudgetVerdict.exceeded(budget, available=left)
        return OK


class UnlimitedBudget:
    """Every amount is covered (no budgets, or budgets enforced elsewhere)."""

    __slots__ = ()

    def can_cover(
        self,
        provider: str,
        amount: Decimal,
        *,
        models: Sequence[str] = (),
        data_class: str | None = None,
    ) -> BudgetVerdict:
        return OK


class AllHealthy:
    """No circuit is open."""

    __slots__ = ()

    def is_open(self, provider: str) -> bool:
        return False


class StaticHealth:
    """A fixed set of providers whose circuits are open."""

    __slots__ = ("_open",)

    def __init__(self, open_providers: Iterable[str] = ()) -> None:
        self._open = frozenset(open_providers)

    def is_open(self, provider: str) -> bool:
        return provider in self._open
