"""Monthly budgets inside one sidecar: reserve the worst case, settle the real cost.

A paid call first *reserves* its worst-case cost on every budget of its provider;
afterwards the reservation is *settled* to the real cost (or *released* when the
call failed or was cancelled). All of it is synchronous code on the event loop:
there is no ``await`` between the check and the reservation, so concurrent
requests in one process can never both take the last dollar, and no lock is held
across an LLM call.

Invariant, per budget and period: ``spent + reserved <= limit`` at all times,
where ``spent`` is the settled spend (the ledger's, plus what this book settled).
Two things can break it and both are visible rather than hidden: a settlement
larger than its reservation (counted in :attr:`BudgetBook.overruns`; it means a
worst-case estimate was wrong) and a limit lowered by ``reconfigure`` below what
is already committed (no new reservation is admitted until spend fits again).

Periods are calendar months in the budget's time zone (see
:mod:`aegis.sidecar.ledger.periods`); a reservation keeps the period it was made
in, so a call reserved on 31 October and settled on 1 November is charged to
October, and November simply starts as a new key with the whole limit.

Where the money comes from is a :class:`BudgetSource`. Each (budget, period) has
an account that *holds* a slice of the budget and commits (settles plus
reserves) only within it. With the embedded SQLite ledger this process is the
only writer, so :class:`LocalBudgetSource` hands out the whole remaining budget.
With the shared PostgreSQL ledger (issue 4) a lease source grants slices taken
from a lease table and tops them up in the background via :meth:`BudgetBook.grant`
and gives them back via :meth:`BudgetBook.surrender`; the book itself is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from aegis.sidecar.budget_source import Allowance, BudgetSource, LocalBudgetSource
from aegis.sidecar.config import BudgetSpec
from aegis.sidecar.ledger.periods import period_of, zone
from aegis.sidecar.ledger.types import quantize_usd
from aegis.sidecar.views import OK, BudgetVerdict

if TYPE_CHECKING:
    from aegis.sidecar.ledger.store import LedgerStore

__all__ = [
    "Allowance",
    "BudgetBook",
    "BudgetSnapshot",
    "BudgetSource",
    "Exceeded",
    "LocalBudgetSource",
    "Reservation",
    "ReservationState",
]

log = logging.getLogger(__name__)
ZERO = Decimal("0.000000")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _money(amount: Decimal | int, rounding: str) -> Decimal:
    if not isinstance(amount, Decimal | int) or isinstance(amount, bool):
        raise TypeError(f"money must be Decimal, got {type(amount).__name__}")
    value = quantize_usd(Decimal(amount), rounding)
    if value < 0:
        raise ValueError(f"money must not be negative, got {amount}")
    return value


# -- book state -------------------------------------------------------------------


class _Account:
    """One budget in one period, as seen by this book."""

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


class ReservationState(StrEnum):
    OPEN = "open"
    SETTLED = "settled"
    RELEASED = "released"


class Reservation:
    """Money set aside for one call. ``period`` is what the ledger row records."""

    __slots__ = ("_accounts", "amount", "period", "provider", "state")

    def __init__(
        self, provider: str, period: str, amount: Decimal, accounts: list[_Account]
    ) -> None:
        self.provider = provider
        self.period = period
        self.amount = amount
        self.state = ReservationState.OPEN
        self._accounts = accounts

    @property
    def budgets(self) -> tuple[str, ...]:
        """Names of the budgets this reservation is charged to."""
        return tuple(a.budget.name for a in self._accounts)

    def __repr__(self) -> str:
        return (
            f"Reservation({self.provider!r}, {self.period!r}, {self.amount}, "
            f"{self.state.value}, budgets={self.budgets})"
        )


@dataclass(frozen=True, slots=True)
class Exceeded:
    """``reserve`` refused: ``budget`` (the first, in config order, that could not
    cover the amount) decides between ``FallbackLocal`` and ``Reject``."""

    budget: BudgetSpec
    period: str
    available: Decimal


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


class BudgetBook:
    """All budgets of one sidecar. Not thread-safe: use it from one event loop."""

    def __init__(
        self,
        budgets: Sequence[BudgetSpec],
        source: BudgetSource | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._source: BudgetSource = source if source is not None else LocalBudgetSource()
        self._clock = clock
        self._budgets: dict[str, list[BudgetSpec]] = {}
        self._zones: dict[str, tzinfo] = {}
        self._accounts: dict[tuple[str, str], _Account] = {}  # (budget name, period)
        self._open: set[Reservation] = set()
        self.overruns = 0
        self.overrun_usd = ZERO
        self._install(budgets)

    @classmethod
    async def open(
        cls,
        budgets: Sequence[BudgetSpec],
        store: LedgerStore,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> BudgetBook:
        """A book for the embedded (single-writer) ledger, with spend loaded from it."""
        return cls(budgets, await LocalBudgetSource.load(store, clock()), clock=clock)

    # -- configuration -------------------------------------------------------

    def _install(self, budgets: Sequence[BudgetSpec]) -> None:
        by_provider: dict[str, list[BudgetSpec]] = {}
        zones: dict[str, tzinfo] = {}
        names: set[str] = set()
        for budget in budgets:
            if budget.name in names:
                raise ValueError(f"duplicate budget name {budget.name!r}")
            names.add(budget.name)
            tz = zone(budget.timezone)  # ValueError before anything changes
            first = zones.setdefault(budget.provider, tz)
            if first != tz:
                # One ledger row has one period; see the module docstring.
                log.warning(
                    "budget %s: time zone %s differs from the provider's first budget; "
                    "periods of provider %s follow the first budget's zone",
                    budget.name,
                    budget.timezone,
                    budget.provider,
                )
            by_provider.setdefault(budget.provider, []).append(budget)
        self._budgets = by_provider
        self._zones = zones

    def reconfigure(self, budgets: Sequence[BudgetSpec]) -> None:
        """Apply new budgets; a budget whose name, provider and time zone survive
        keeps its spend and reservations (a new limit takes effect at once)."""
        old = self._accounts
        self._install(budgets)
        new = {b.name: b for b in self.budgets()}
        self._accounts = {}
        for key, account in old.items():
            budget = new.get(account.budget.name)
            if (
                budget is not None
                and account.budget.provider == budget.provider
                and zone(account.budget.timezone) == zone(budget.timezone)
            ):
                account.budget = budget
                account.held = self._source.reopen_account(
                    budget, account.period, account.allowance
                )
                self._accounts[key] = account
        # Calls already in flight count against budgets that are new to them.
        for reservation in self._open:
            for budget in self._budgets.get(reservation.provider, ()):
                account = self._account(budget, reservation.period)
                if account not in reservation._accounts:
                    reservation._accounts.append(account)
                    account.reserved += reservation.amount

    # -- periods and accounts ------------------------------------------------

    def period(self, provider: str, now: datetime | None = None) -> str:
        """The period a call of ``provider`` at ``now`` is charged to (``YYYY-MM``)."""
        return period_of(now or self._clock(), self._zones.get(provider, UTC))

    def _account(self, budget: BudgetSpec, period: str) -> _Account:
        key = (budget.name, period)
        account = self._accounts.get(key)
        if account is None:
            account = _Account(budget, period, self._source.open_account(budget, period))
            self._accounts[key] = account
            self._prune(budget.name, period)
        return account

    def _prune(self, name: str, period: str) -> None:
        """Forget older periods of a budget that have nothing in flight.

        Calls from around a month boundary may arrive out of order, so an older
        period stays open while it has reservations; once it has none it can be
        reopened from the source at any time with the same result.
        """
        stale = [
            key
            for key, account in self._accounts.items()
            if key[0] == name and key[1] < period and account.reserved == 0
        ]
        for key in stale:
            del self._accounts[key]

    # -- the request path ----------------------------------------------------

    def can_cover(self, provider: str, amount: Decimal) -> BudgetVerdict:
        """The router's :class:`~aegis.sidecar.views.BudgetView`: advisory, reserves nothing."""
        budgets = self._budgets.get(provider)
        if not budgets:
            return OK
        needed = _money(amount, ROUND_CEILING)
        period = self.period(provider)
        for budget in budgets:
            if not self._account(budget, period).fits(needed):
                return BudgetVerdict.exceeded(budget)
        return OK

    def reserve(
        self, provider: str, amount: Decimal, now: datetime | None = None
    ) -> Reservation | Exceeded:
        """Set ``amount`` (the worst case, rounded up to a micro-dollar) aside on
        every budget of ``provider``, all or nothing."""
        needed = _money(amount, ROUND_CEILING)
        period = self.period(provider, now)
        accounts = [self._account(b, period) for b in self._budgets.get(provider, ())]
        for account in accounts:
            if not account.fits(needed):
                self._source.on_short(account.budget, period, needed)
                return Exceeded(
                    account.budget,
                    period,
                    max(account.held - account.settled - account.reserved, ZERO),
                )
        for account in accounts:
            account.reserved += needed
        reservation = Reservation(provider, period, needed, accounts)
        self._open.add(reservation)
        return reservation

    def settle(self, reservation: Reservation, actual: Decimal) -> Decimal:
        """Replace the reservation by the real cost; returns the amount charged
        (rounded to a micro-dollar exactly as the ledger stores it)."""
        if reservation.state is not ReservationState.OPEN:
            raise ValueError(f"cannot settle a {reservation.state.value} reservation")
        charged = _money(actual, ROUND_HALF_UP)
        for account in reservation._accounts:
            account.reserved -= reservation.amount
            account.settled += charged
        if charged > reservation.amount:
            self.overruns += 1
            self.overrun_usd += charged - reservation.amount
            log.warning(
                "settled %s USD on %s, more than the %s USD reserved",
                charged,
                reservation.provider,
                reservation.amount,
            )
        reservation.state = ReservationState.SETTLED
        self._open.discard(reservation)
        self._source.on_settled(reservation.provider, reservation.period, charged)
        return charged

    def release(self, reservation: Reservation) -> None:
        """Give the reservation back (failed or cancelled call). Releasing a
        reservation that is no longer open does nothing, so ``finally`` is safe."""
        if reservation.state is not ReservationState.OPEN:
            return
        for account in reservation._accounts:
            account.reserved -= reservation.amount
        reservation.state = ReservationState.RELEASED
        self._open.discard(reservation)

    # -- the lease seam (issue 4) --------------------------------------------

    def grant(self, budget_name: str, period: str, amount: Decimal) -> None:
        """Add ``amount`` to what this book holds for ``budget_name`` in ``period``."""
        account = self._accounts.get((budget_name, period))
        if account is None:
            raise KeyError(f"no open account for {budget_name} in {period}")
        account.held += _money(amount, ROUND_FLOOR)

    def surrender(self, budget_name: str, period: str) -> Decimal:
        """Shrink the held slice to what is committed; returns the amount given up."""
        account = self._accounts.get((budget_name, period))
        if account is None:
            return ZERO
        unused = max(account.held - account.settled - account.reserved, ZERO)
        account.held -= unused
        return unused

    # -- observation ---------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Reservations not yet settled or released."""
        return len(self._open)

    def snapshot(self, now: datetime | None = None) -> list[BudgetSnapshot]:
        """Every budget's state in its current period (config order)."""
        instant = now or self._clock()
        result = []
        for provider, budgets in self._budgets.items():
            period = self.period(provider, instant)
            for budget in budgets:
                account = self._account(budget, period)
                result.append(_snapshot(account))
        return result

    def budgets(self) -> Iterable[BudgetSpec]:
        return (b for group in self._budgets.values() for b in group)


def _snapshot(account: _Account) -> BudgetSnapshot:
    limit = account.budget.limit_usd
    spent = account.allowance.spent_elsewhere + account.settled
    committed = spent + account.reserved
    return BudgetSnapshot(
        name=account.budget.name,
        provider=account.budget.provider,
        period=account.period,
        limit=limit,
        spent=spent,
        reserved=account.reserved,
        remaining=max(limit - committed, ZERO),
        utilisation=committed / limit if limit > 0 else Decimal(1),
        available=max(account.held - account.settled - account.reserved, ZERO),
    )
