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

from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from ..contract import BudgetSpec
from ..contract.money import ZERO
from ..contract.periods import PeriodKind, period_bounds, period_of, shift_period, zone
from ..ledger import LedgerStore
from .accounts import Allowance, Reservation

__all__ = ["Allowance", "BudgetSource", "LocalBudgetSource", "SpendBucket"]

#: (provider, models, data class, the rows' month, bucket start): what a budget's
#: filters and periods read.
SpendBucket = tuple[str, tuple[str, ...], str | None, str, datetime]


def bucket_of(instant: datetime) -> datetime:
    """The quarter hour (UTC) of ``instant``: every IANA zone's offset is a multiple of
    15 minutes, so a quarter hour never straddles a local midnight."""
    utc = instant.astimezone(UTC)
    return utc.replace(minute=utc.minute - utc.minute % 15, second=0, microsecond=0)


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

    def on_settled(self, reservation: Reservation, amount: Decimal) -> None:
        """``reservation`` was settled at ``amount`` (with or without budgets)."""
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

    Settled spend per (provider, models, data class, month, quarter hour) is loaded
    once from the ledger at start; from then on this process is the only writer, so
    adding what it settles keeps the map equal to the ledger without re-reading it.
    A budget's spend in a period is the sum of the buckets its filters match in the
    period: a month's by the rows' month (their reservation's), a day's or week's
    within its bounds (a loaded row counts in the quarter hour it was written in, a
    settled one in that of its reservation).
    """

    def __init__(self, spend: Iterable[tuple[SpendBucket, Decimal]] = ()) -> None:
        self._spend: dict[SpendBucket, Decimal] = {}
        for key, amount in spend:
            self._spend[key] = self._spend.get(key, ZERO) + amount

    @classmethod
    async def load(cls, store: LedgerStore, now: datetime | None = None) -> LocalBudgetSource:
        """Read settled spend from the start of last month (UTC) on: that covers the
        current day, week and month in any time zone."""
        since = period_bounds(shift_period(period_of(now or datetime.now(UTC)), -1))[0]
        rows = await store.load_spend_buckets(since)
        return cls(
            ((p, (m,), c, month, bucket_of(at)), amount) for p, m, c, month, at, amount in rows
        )

    def spend(self, budget: BudgetSpec, period: str) -> Decimal:
        """What the calls ``budget`` applies to settled in ``period``: a month by the
        rows' month (the reservation's), a day or week by the quarter hour."""
        monthly = budget.period is PeriodKind.MONTHLY
        start, end = period_bounds(period, zone(budget.timezone))
        return sum(
            (
                amount
                for (provider, models, data_class, month, at), amount in self._spend.items()
                if (month == period if monthly else start <= at < end)
                and budget.applies(provider, models=models, data_class=data_class)
            ),
            ZERO,
        )

    def open_account(self, budget: BudgetSpec, period: str) -> Allowance:
        spent = self.spend(budget, period)
        return Allowance(spent_elsewhere=spent, held=max(budget.limit_usd - spent, ZERO))

    def reopen_account(self, budget: BudgetSpec, period: str, allowance: Allowance) -> Decimal:
        return max(budget.limit_usd - allowance.spent_elsewhere, ZERO)

    def on_settled(self, reservation: Reservation, amount: Decimal) -> None:
        at = bucket_of(reservation.at or datetime.now(UTC))
        key = (
            reservation.provider,
            reservation.models,
            reservation.data_class,
            reservation.period,
            at,
        )
        if key not in self._spend and len(self._spend) % 4096 == 4095:
            old = at - timedelta(days=40)  # older than any period that can be open
            self._spend = {k: v for k, v in self._spend.items() if k[4] >= old}
        self._spend[key] = self._spend.get(key, ZERO) + amount

    def on_short(self, budget: BudgetSpec, period: str, needed: Decimal) -> None:
        return None

    def may_grant(self, budget: BudgetSpec, period: str, needed: Decimal) -> bool:
        return False  # the account already holds everything there is

    def refill(self, budget: BudgetSpec, period: str, needed: Decimal) -> Awaitable[None] | None:
        return None

    def on_closed(self, budget: BudgetSpec, period: str, unused: Decimal) -> None:
        return None
