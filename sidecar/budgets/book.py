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
:mod:`aegis.sidecar.contract.periods`); a reservation keeps the period it was made
in, so a call reserved on 31 October and settled on 1 November is charged to
October, and November simply starts as a new key with the whole limit.

Where the money comes from is a :class:`BudgetSource`. Each (budget, period) has
an account that *holds* a slice of the budget and commits (settles plus
reserves) only within it. With the embedded SQLite ledger this process is the
only writer, so :class:`LocalBudgetSource` hands out the whole remaining budget.
With the shared PostgreSQL ledger a lease source
(:mod:`aegis.sidecar.budgets.leases`) grants slices taken from a lease table, tops
them up in the background via :meth:`BudgetBook.grant` and gives them back via
:meth:`BudgetBook.surrender`; the book itself is the same. :meth:`acquire` is
:meth:`reserve` plus, when a slice is short and the source can top it up, a short
wait for that. While the source cannot reach the database (``blocked``) or has not
renewed its leases in time (``lease_deadline``) the book fails closed: every
reservation on a budgeted provider is refused with reason ``budget_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from ..contract import BudgetSpec
from ..contract.money import ZERO, checked_usd
from ..contract.periods import period_of, zone
from ..ledger import LedgerStore
from ..routing.ports import BUDGET_EXCEEDED, BUDGET_UNAVAILABLE, OK, BudgetVerdict
from .accounts import Account, BudgetSnapshot, Exceeded, Reservation, ReservationState
from .sources import BudgetSource, LocalBudgetSource

__all__ = ["BudgetBook"]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BudgetBook:
    """All budgets of one sidecar. Not thread-safe: use it from one event loop."""

    def __init__(
        self,
        budgets: Sequence[BudgetSpec],
        source: BudgetSource | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        wait_timeout: float = 2.0,
        namespace: str = "",
    ) -> None:
        """``namespace``: this sidecar's, the namespace of its budgets that do not
        name one (it keys their ledger charges)."""
        self.namespace = namespace
        self._source: BudgetSource = source if source is not None else LocalBudgetSource()
        self._clock = clock
        self._wait_timeout = wait_timeout
        # Set by a lease source while the shared ledger is unreachable: no paid
        # reservation is admitted (fail closed); the value is the reason.
        self.blocked: str | None = None
        # Monotonic time after which held lease money may have been reclaimed (the
        # lease source moves it forward with every renewal): past it, fail closed.
        self.lease_deadline = math.inf
        self.unavailable_refusals = 0
        self._budgets: dict[str, list[BudgetSpec]] = {}
        self._zones: dict[str, tzinfo] = {}
        self._charges: dict[str, str] = {}
        self._accounts: dict[tuple[str, str], Account] = {}  # (budget name, period)
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
        self._charges = {
            p: ",".join(b.key(self.namespace).encoded for b in group)
            for p, group in by_provider.items()
        }

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
            else:
                self._source.on_closed(account.budget, account.period, account.unused())
        # Calls already in flight count against budgets that are new to them.
        for reservation in self._open:
            for budget in self._budgets.get(reservation.provider, ()):
                account = self._account(budget, reservation.period)
                if account not in reservation.accounts:
                    reservation.accounts.append(account)
                    account.reserved += reservation.amount

    # -- periods and accounts ------------------------------------------------

    def period(self, provider: str, now: datetime | None = None) -> str:
        """The period a call of ``provider`` at ``now`` is charged to (``YYYY-MM``)."""
        return period_of(now or self._clock(), self._zones.get(provider, UTC))

    def _account(self, budget: BudgetSpec, period: str) -> Account:
        key = (budget.name, period)
        account = self._accounts.get(key)
        if account is None:
            account = Account(budget, period, self._source.open_account(budget, period))
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
            account = self._accounts.pop(key)
            self._source.on_closed(account.budget, account.period, account.unused())

    # -- the request path ----------------------------------------------------

    def can_cover(self, provider: str, amount: Decimal) -> BudgetVerdict:
        """The router's budget port (:class:`BudgetView`): advisory, reserves nothing."""
        budgets = self._budgets.get(provider)
        if not budgets:
            return OK
        if self.blocked is not None or time.monotonic() > self.lease_deadline:
            self.unavailable_refusals += 1
            return BudgetVerdict.exceeded(budgets[0], BUDGET_UNAVAILABLE)
        needed = checked_usd(amount, ROUND_CEILING)
        period = self.period(provider)
        source = self._source
        for budget in budgets:
            account = self._account(budget, period)
            if not account.fits(needed) and not source.may_grant(budget, period, needed):
                return BudgetVerdict.exceeded(budget, period=period, available=account.unused())
        return OK

    def reserve(
        self, provider: str, amount: Decimal, now: datetime | None = None
    ) -> Reservation | Exceeded:
        """Set ``amount`` (the worst case, rounded up to a micro-dollar) aside on
        every budget of ``provider``, all or nothing."""
        needed = checked_usd(amount, ROUND_CEILING)
        period = self.period(provider, now)
        accounts = [self._account(b, period) for b in self._budgets.get(provider, ())]
        if accounts and (self.blocked is not None or time.monotonic() > self.lease_deadline):
            self.unavailable_refusals += 1
            first = accounts[0]
            return Exceeded(first.budget, period, first.unused(), needed, BUDGET_UNAVAILABLE)
        for account in accounts:
            if not account.fits(needed):
                self._source.on_short(account.budget, period, needed)
                return Exceeded(account.budget, period, account.unused(), needed)
        for account in accounts:
            account.reserved += needed
        reservation = Reservation(provider, period, needed, accounts)
        self._open.add(reservation)
        return reservation

    async def acquire(
        self, provider: str, amount: Decimal, now: datetime | None = None
    ) -> Reservation | Exceeded:
        """:meth:`reserve`, but when a budget's held slice is short and its source
        can top it up, wait for that (at most ``wait_timeout`` seconds) and retry.

        The fast path (the slice covers it) does not suspend. A lease source tops
        slices up in the background before they run out, so waiting is rare: the
        first request of a month, or a burst larger than the slice.
        """
        outcome = self.reserve(provider, amount, now)
        deadline = asyncio.get_running_loop().time() + self._wait_timeout
        # One top-up per budget of the provider at most, plus one retry.
        for _ in range(len(self._budgets.get(provider, ())) + 1):
            if not isinstance(outcome, Exceeded) or outcome.reason != BUDGET_EXCEEDED:
                return outcome
            wait = self._source.refill(outcome.budget, outcome.period, outcome.needed)
            if wait is None:
                return outcome
            try:
                async with asyncio.timeout_at(deadline):
                    await wait
            except TimeoutError:
                self.unavailable_refusals += 1
                return Exceeded(
                    outcome.budget,
                    outcome.period,
                    outcome.available,
                    outcome.needed,
                    BUDGET_UNAVAILABLE,
                )
            outcome = self.reserve(provider, amount, now)
        return outcome

    def settle(self, reservation: Reservation, actual: Decimal) -> Decimal:
        """Replace the reservation by the real cost; returns the amount charged
        (rounded to a micro-dollar exactly as the ledger stores it)."""
        if reservation.state is not ReservationState.OPEN:
            raise ValueError(f"cannot settle a {reservation.state.value} reservation")
        charged = checked_usd(actual, ROUND_HALF_UP)
        for account in reservation.accounts:
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
        for account in reservation.accounts:
            account.reserved -= reservation.amount
        reservation.state = ReservationState.RELEASED
        self._open.discard(reservation)

    # -- the lease seam: a lease source tops the book up and drains it -------

    def grant(self, budget_name: str, period: str, amount: Decimal) -> None:
        """Add ``amount`` to what this book holds for ``budget_name`` in ``period``."""
        account = self._accounts.get((budget_name, period))
        if account is None:
            raise KeyError(f"no open account for {budget_name} in {period}")
        account.held += checked_usd(amount, ROUND_FLOOR)

    def surrender(self, budget_name: str, period: str, at_most: Decimal | None = None) -> Decimal:
        """Shrink the held slice towards what is committed (by at most ``at_most``);
        returns the amount given up."""
        account = self._accounts.get((budget_name, period))
        if account is None:
            return ZERO
        unused = account.unused() if at_most is None else min(account.unused(), at_most)
        account.held -= unused
        return unused

    def account_view(
        self, budget_name: str, period: str
    ) -> tuple[Decimal, Decimal, Decimal] | None:
        """(held, settled, reserved) of an open account, for a lease source's top-ups."""
        account = self._accounts.get((budget_name, period))
        if account is None:
            return None
        return account.held, account.settled, account.reserved

    def charged_budgets(self, provider: str) -> str:
        """The budget keys a ledger row of ``provider`` is charged to, comma-separated."""
        return self._charges.get(provider, "")

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
                result.append(account.snapshot())
        return result

    def budgets(self) -> Iterable[BudgetSpec]:
        return (b for group in self._budgets.values() for b in group)
