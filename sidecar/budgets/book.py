"""Budgets inside one sidecar: reserve the worst case, settle the real cost.

A paid call first *reserves* its worst-case cost in every budget that applies to
it: by the budget's filters (provider, model globs, data class, this sidecar's
ServiceAccount), not by provider alone. Afterwards the reservation is *settled* to
the real cost (or *released* when the call failed or was cancelled). All of it is
synchronous code on the event loop: there is no ``await`` between the check and
the reservation, so concurrent requests in one process can never both take the
last dollar, and no lock is held across an LLM call.

Invariant, per budget and period: ``spent + reserved <= limit`` at all times,
where ``spent`` is the settled spend (the ledger's, plus what this book settled).
Three things can break it and all are visible rather than hidden: a settlement
larger than its reservation (counted in :attr:`BudgetBook.overruns`; it means a
worst-case estimate was wrong), a limit lowered by ``reconfigure`` below what
is already committed (no new reservation is admitted until spend fits again), and
a ``Notify`` budget, which lets calls go ahead beyond its limit by design (each one
counted in :attr:`BudgetBook.notified`).

Each budget has its own period (a day, an ISO week or a month in its time zone,
see :mod:`aegis.sidecar.contract.periods`): a Daily and a Monthly budget on the
same call are charged to two period keys. A reservation keeps the periods it was
made in, so a call reserved on 31 October and settled on 1 November is charged to
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
reservation a budget other than ``Notify`` applies to is refused with reason
``budget_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from ..contract import BudgetSpec, OnExceeded
from ..contract.money import ZERO, checked_usd
from ..contract.periods import period_of, zone
from ..ledger import LedgerStore
from ..routing.ports import BUDGET_EXCEEDED, BUDGET_UNAVAILABLE, OK, BudgetVerdict
from .accounts import Account, BudgetSnapshot, Exceeded, Reservation, ReservationState
from .matching import BookBudget, Matcher
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
        service_account: str | None = None,
        local_providers: Collection[str] = (),
    ) -> None:
        """``namespace``: this sidecar's, the namespace of its budgets that do not
        name one (it keys their ledger charges); ``service_account``: the one its pod
        runs as (``None``: unknown, every budget's ServiceAccount filter matches);
        ``local_providers``: those a budget naming no provider leaves alone."""
        self.namespace = namespace
        self.service_account = service_account
        self._local = frozenset(local_providers)
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
        # Calls that went ahead beyond a Notify budget, by budget key.
        self.notified: dict[str, int] = {}
        self._budgets: list[BookBudget] = []
        self._matcher = Matcher((), service_account, self._local)
        self._accounts: dict[tuple[str, str], Account] = {}  # (budget key, period)
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
        namespace: str = "",
        service_account: str | None = None,
        local_providers: Collection[str] = (),
    ) -> BudgetBook:
        """A book for the embedded (single-writer) ledger, with spend loaded from it."""
        source = await LocalBudgetSource.load(store, clock())
        return cls(
            budgets,
            source,
            clock=clock,
            namespace=namespace,
            service_account=service_account,
            local_providers=local_providers,
        )

    # -- configuration -------------------------------------------------------

    def _install(
        self, budgets: Sequence[BudgetSpec], local_providers: Collection[str] | None = None
    ) -> None:
        installed: list[BookBudget] = []
        for spec in budgets:
            budget = BookBudget(spec, self.namespace)  # ValueError before anything changes
            if any(b.key == budget.key for b in installed):
                raise ValueError(f"duplicate budget {budget.key}")
            installed.append(budget)
        self._budgets = installed
        if local_providers is not None:
            self._local = frozenset(local_providers)
        self._matcher = Matcher(installed, self.service_account, self._local)

    def reconfigure(
        self, budgets: Sequence[BudgetSpec], local_providers: Collection[str] | None = None
    ) -> None:
        """Apply new budgets; a budget whose key, filters, period and time zone
        survive keeps its spend and reservations (a new limit takes effect at once)."""
        old = self._accounts
        self._install(budgets, local_providers)
        new = {b.key: b for b in self._budgets}
        self._accounts = {}
        for key, account in old.items():
            budget = new.get(account.key)
            if budget is not None and budget.same_spend(account.budget):
                account.budget = budget.spec
                account.held = self._source.reopen_account(
                    budget.spec, account.period, account.allowance
                )
                self._accounts[key] = account
            else:
                self._source.on_closed(account.budget, account.period, account.unused())
        # Calls already in flight count against budgets that are new to them.
        for reservation in self._open:
            at = reservation.at or self._clock()
            for budget in self._applying(
                reservation.provider, reservation.models, reservation.data_class
            ):
                account = self._account(budget, budget.period(at))
                if account not in reservation.accounts:
                    reservation.accounts.append(account)
                    account.reserved += reservation.amount

    # -- which budgets, which periods ------------------------------------------

    def _applying(
        self, provider: str, models: tuple[str, ...], data_class: str | None
    ) -> tuple[BookBudget, ...]:
        return self._matcher.applying(provider, models, data_class)

    def applying(
        self, provider: str, models: Sequence[str] = (), data_class: str | None = None
    ) -> list[BudgetSpec]:
        """The budgets a call of ``provider`` that may use ``models``, of
        ``data_class``, is charged to (config order)."""
        return [b.spec for b in self._applying(provider, tuple(models), data_class)]

    def period(self, provider: str, now: datetime | None = None) -> str:
        """The month a ledger row of ``provider`` at ``now`` records (``YYYY-MM``) in
        the zone of the first budget that applies to it (UTC when none does); each
        budget's own period is in the row's charges."""
        budgets = self._applying(provider, (), None)
        return period_of(now or self._clock(), budgets[0].tz if budgets else UTC)

    def current_period(self, budget: BudgetSpec, now: datetime | None = None) -> str:
        """``budget``'s period at ``now`` (its kind, in its zone)."""
        return period_of(now or self._clock(), zone(budget.timezone), budget.period)

    def _account(self, budget: BookBudget, period: str) -> Account:
        key = (budget.key, period)
        account = self._accounts.get(key)
        if account is None:
            allowance = self._source.open_account(budget.spec, period)
            account = Account(budget.spec, budget.key, period, allowance)
            self._accounts[key] = account
            self._prune(budget.key, period)
        return account

    def _prune(self, budget_key: str, period: str) -> None:
        """Forget older periods of a budget that have nothing in flight.

        Calls from around a period boundary may arrive out of order, so an older
        period stays open while it has reservations; once it has none it can be
        reopened from the source at any time with the same result.
        """
        stale = [
            key
            for key, account in self._accounts.items()
            if key[0] == budget_key and key[1] < period and account.reserved == 0
        ]
        for key in stale:
            account = self._accounts.pop(key)
            self._source.on_closed(account.budget, account.period, account.unused())

    def _unavailable(self) -> bool:
        return self.blocked is not None or time.monotonic() > self.lease_deadline

    # -- the request path ----------------------------------------------------

    def can_cover(
        self,
        provider: str,
        amount: Decimal,
        *,
        models: Sequence[str] = (),
        data_class: str | None = None,
    ) -> BudgetVerdict:
        """The router's budget port (:class:`BudgetView`): advisory, reserves nothing.
        A ``Notify`` budget always covers (the call goes ahead)."""
        strict = [b for b in self._applying(provider, tuple(models), data_class) if not b.notify]
        if not strict:
            return OK
        if self._unavailable():
            self.unavailable_refusals += 1
            return BudgetVerdict.exceeded(strict[0].spec, BUDGET_UNAVAILABLE)
        needed = checked_usd(amount, ROUND_CEILING)
        now = self._clock()
        for budget in strict:
            period = budget.period(now)
            account = self._account(budget, period)
            if not account.fits(needed) and not self._source.may_grant(budget.spec, period, needed):
                return BudgetVerdict.exceeded(
                    budget.spec, period=period, available=account.unused()
                )
        return OK

    def reserve(
        self,
        provider: str,
        amount: Decimal,
        now: datetime | None = None,
        *,
        models: Sequence[str] = (),
        data_class: str | None = None,
        notify_waits: bool = False,
    ) -> Reservation | Exceeded:
        """Set ``amount`` (the worst case, rounded up to a micro-dollar) aside in
        every budget that applies to the call, each in its own period, all or nothing.
        A ``Notify`` budget that cannot cover it lets it go ahead (counted in
        :attr:`notified`), unless ``notify_waits``: then it answers like the others
        (:meth:`acquire` first waits for a top-up)."""
        needed = checked_usd(amount, ROUND_CEILING)
        at = now or self._clock()
        shape = tuple(models)
        budgets = self._applying(provider, shape, data_class)
        accounts = [self._account(b, b.period(at)) for b in budgets]
        unavailable = bool(accounts) and self._unavailable()
        over: list[str] = []
        for budget, account in zip(budgets, accounts, strict=True):
            if budget.notify:
                if not account.fits(needed) and not unavailable:
                    self._source.on_short(account.budget, account.period, needed)
                    if notify_waits:
                        return Exceeded(account.budget, account.period, account.unused(), needed)
                    over.append(account.key)
            elif unavailable:
                self.unavailable_refusals += 1
                return Exceeded(
                    account.budget, account.period, account.unused(), needed, BUDGET_UNAVAILABLE
                )
            elif not account.fits(needed):
                self._source.on_short(account.budget, account.period, needed)
                return Exceeded(account.budget, account.period, account.unused(), needed)
        for account in accounts:
            account.reserved += needed
        for key in over:
            self.notified[key] = self.notified.get(key, 0) + 1
        row_period = period_of(at, budgets[0].tz if budgets else UTC)
        reservation = Reservation(
            provider, row_period, needed, accounts, at=at, models=shape, data_class=data_class
        )
        reservation.notified = tuple(over)
        self._open.add(reservation)
        return reservation

    async def acquire(
        self,
        provider: str,
        amount: Decimal,
        now: datetime | None = None,
        *,
        models: Sequence[str] = (),
        data_class: str | None = None,
    ) -> Reservation | Exceeded:
        """:meth:`reserve`, but when a budget's held slice is short and its source
        can top it up, wait for that and retry, as many times as it takes within
        ``wait_timeout`` seconds. A ``Notify`` budget that still cannot cover it lets
        the call go ahead.

        The fast path (the slice covers it) does not suspend. A lease source tops
        slices up in the background before they run out, so waiting is rare: the
        first request of a period, or a burst larger than the slice. A burst may need
        several top-ups (a slice is at most ``max_slice_share`` of the limit, and
        requests that arrive meanwhile take their share of each), so the number of
        waits is not bounded, only their time: the source says when waiting cannot
        help (``refill`` answers None: the budget is exhausted, or the ledger down).
        """

        def attempt(waits: bool) -> Reservation | Exceeded:
            return self.reserve(
                provider, amount, now, models=models, data_class=data_class, notify_waits=waits
            )

        outcome = attempt(True)
        deadline = asyncio.get_running_loop().time() + self._wait_timeout
        while isinstance(outcome, Exceeded) and outcome.reason == BUDGET_EXCEEDED:
            notify = outcome.budget.on_exceeded is OnExceeded.NOTIFY
            wait = self._source.refill(outcome.budget, outcome.period, outcome.needed)
            if wait is None:
                return attempt(False) if notify else outcome
            try:
                async with asyncio.timeout_at(deadline):
                    await wait
            except TimeoutError:
                if notify:
                    return attempt(False)
                self.unavailable_refusals += 1
                return Exceeded(
                    outcome.budget,
                    outcome.period,
                    outcome.available,
                    outcome.needed,
                    BUDGET_UNAVAILABLE,
                )
            outcome = attempt(True)
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
        self._source.on_settled(reservation, charged)
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
    # Accounts are named by the budget's ledger key (``Scope/namespace/name``).

    def grant(self, budget_key: str, period: str, amount: Decimal) -> None:
        """Add ``amount`` to what this book holds for ``budget_key`` in ``period``."""
        account = self._accounts.get((budget_key, period))
        if account is None:
            raise KeyError(f"no open account for {budget_key} in {period}")
        account.held += checked_usd(amount, ROUND_FLOOR)

    def surrender(self, budget_key: str, period: str, at_most: Decimal | None = None) -> Decimal:
        """Shrink the held slice towards what is committed (by at most ``at_most``);
        returns the amount given up."""
        account = self._accounts.get((budget_key, period))
        if account is None:
            return ZERO
        unused = account.unused() if at_most is None else min(account.unused(), at_most)
        account.held -= unused
        return unused

    def limit_commitment(self, budget_key: str, period: str, ceiling: Decimal | None) -> None:
        """Commit (settle plus reserve) at most ``ceiling`` in this account, whatever it
        holds (``None``: no such bound); a lease source's promise to the database."""
        account = self._accounts.get((budget_key, period))
        if account is not None:
            account.ceiling = ceiling

    def account_view(self, budget_key: str, period: str) -> tuple[Decimal, Decimal, Decimal] | None:
        """(held, settled, reserved) of an open account, for a lease source's top-ups."""
        account = self._accounts.get((budget_key, period))
        if account is None:
            return None
        return account.held, account.settled, account.reserved

    def charged_budgets(self, provider: str) -> str:
        """What a ledger row of ``provider`` appended without its reservation's charges
        is charged to: every budget that may apply, by key alone, so in the row's own
        period (right for a Monthly budget in the zone of the first budget)."""
        return ",".join(b.key for b in self._applying(provider, (), None))

    # -- observation ---------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Reservations not yet settled or released."""
        return len(self._open)

    def snapshot(self, now: datetime | None = None) -> list[BudgetSnapshot]:
        """Every budget's state in its current period (config order)."""
        instant = now or self._clock()
        return [self._account(b, b.period(instant)).snapshot() for b in self._budgets]

    def budgets(self) -> Iterable[BudgetSpec]:
        return (b.spec for b in self._budgets)
