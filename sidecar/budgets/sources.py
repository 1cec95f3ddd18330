"""Where a budget book's money comes from: the seam between one sidecar and many.

A :class:`~aegis.sidecar.budgets.book.BudgetBook` keeps, per budget and period, an
account that *holds* some money and commits (settles plus reserves) only within
it. A :class:`BudgetSource` decides how much an account holds:

- :class:`LocalBudgetSource` (embedded SQLite ledger, one process): the whole
  remaining budget, since this process is the ledger's only writer;
- a lease source (:mod:`.leases`, shared PostgreSQL ledger): a slice leased from the
  budget in one atomic statement, topped up in the background with
  :meth:`BudgetBook.grant` and returned with :meth:`BudgetBook.surrender`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from ..contract import BudgetSpec
from ..contract.money import ZERO
from ..contract.periods import period_of, shift_period
from ..ledger import LedgerStore


@dataclass(frozen=True, slots=True)
class Allowance:
    """What a source grants an account when it opens.

    ``spent_elsewhere``: settled spend the account did not make itself (the ledger
    at start, other processes); ``held``: money the account may commit.
    """

    spent_elsewhere: Decimal
    held: Decimal


class BudgetSource(Protocol):
    """Supplies each (budget, period) account with money. Every method is
    synchronous and must not do I/O: it runs inside ``reserve``/``settle``. A
    source that needs I/O (leases) does it in its own task and calls
    :meth:`BudgetBook.grant` / :meth:`BudgetBook.surrender`."""

    def open_account(self, budget: BudgetSpec, period: str) -> Allowance:
        """First use of ``budget`` in ``period`` by this book."""
        ...

    def reopen_account(self, budget: BudgetSpec, period: str, allowance: Allowance) -> Decimal:
        """The budget's spec changed (reconfigure): how much the account holds now."""
        ...

    def on_settled(self, provider: str, period: str, amount: Decimal) -> None:
        """A call of ``provider`` was settled at ``amount`` (with or without budgets)."""
        ...

    def on_short(self, budget: BudgetSpec, period: str, needed: Decimal) -> None:
        """A reservation of ``needed`` did not fit the held slice (a lease source
        schedules a top-up; the local source has nothing more to give)."""
        ...

    def may_grant(self, budget: BudgetSpec, period: str, needed: Decimal) -> bool:
        """Could a top-up let a reservation of ``needed`` fit? Advisory, for the
        router: ``True`` sends the request on to :meth:`refill`."""
        ...

    def refill(self, budget: BudgetSpec, period: str, needed: Decimal) -> Awaitable[None] | None:
        """Something to await before retrying a reservation of ``needed`` that did
        not fit, or ``None`` when waiting cannot help."""
        ...

    def on_closed(self, budget: BudgetSpec, period: str, unused: Decimal) -> None:
        """The book forgot an account (an older period with nothing in flight, or a
        budget removed by reconfigure); ``unused`` of its held money was not spent."""
        ...


class LocalBudgetSource:
    """One process, one ledger: the account holds the whole remaining budget.

    Spend per (provider, period) is loaded once from the ledger at start; from
    then on this process is the only writer, so adding what it settles keeps the
    map equal to the ledger without re-reading it, including when a new month
    begins (its spend is whatever this process settled in it: usually nothing).
    """

    def __init__(self, spend: Mapping[tuple[str, str], Decimal] | None = None) -> None:
        self._spend: dict[tuple[str, str], Decimal] = dict(spend or {})

    @classmethod
    async def load(cls, store: LedgerStore, now: datetime | None = None) -> LocalBudgetSource:
        """Read settled spend of every provider from last month (UTC) on.

        Starting a month back covers budget time zones ahead of or behind UTC and
        calls reserved last month that settle this month.
        """
        since = shift_period(period_of(now or datetime.now(UTC)), -1)
        return cls(await store.load_spend(since_period=since))

    def spend(self, provider: str, period: str) -> Decimal:
        return self._spend.get((provider, period), ZERO)

    def open_account(self, budget: BudgetSpec, period: str) -> Allowance:
        spent = self.spend(budget.provider, period)
        return Allowance(spent_elsewhere=spent, held=max(budget.limit_usd - spent, ZERO))

    def reopen_account(self, budget: BudgetSpec, period: str, allowance: Allowance) -> Decimal:
        return max(budget.limit_usd - allowance.spent_elsewhere, ZERO)

    def on_settled(self, provider: str, period: str, amount: Decimal) -> None:
        key = (provider, period)
        self._spend[key] = self._spend.get(key, ZERO) + amount

    def on_short(self, budget: BudgetSpec, period: str, needed: Decimal) -> None:
        return None

    def may_grant(self, budget: BudgetSpec, period: str, needed: Decimal) -> bool:
        return False  # the account already holds everything there is

    def refill(self, budget: BudgetSpec, period: str, needed: Decimal) -> Awaitable[None] | None:
        return None

    def on_closed(self, budget: BudgetSpec, period: str, unused: Decimal) -> None:
        return None
