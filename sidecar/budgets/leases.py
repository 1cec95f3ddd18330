"""Budget leases: the :class:`~aegis.sidecar.budgets.sources.BudgetSource` for many
sidecars spending one budget through the shared PostgreSQL ledger.

A sidecar never asks the database per request. Per (budget, period) it holds a
*lease*: a slice of the remaining money taken in one atomic statement
(``aegis.lease_take``), which the budget book spends locally with per-request
reservations. A background task here:

- tops the slice up before it runs out (when less than ``refill_at`` of a target
  slice is unused); a request waits only when a burst outruns the top-up;
- sizes slices by the spend rate (``horizon`` seconds of spend plus what is in
  flight), while the database caps each take at a fair share of what is left
  (``remaining / (active leases + 1)``), so the last dollars are not stranded;
- renews the lease's TTL every ``ttl/3`` seconds, returns money that has been
  idle for ``idle_return`` seconds, and returns everything unused on shutdown;
- reconciles the book with every answer: a take or return whose answer was lost
  (timed out after the database applied it, or never sent) leaves the lease and
  the book apart, and the next answer's ``lease_amount`` brings them together
  again (:mod:`.lease_reconcile`);
- after a restart, once the spool of the previous life has been replayed, closes
  that life's leases at exactly what they settled (``aegis.lease_takeover``).

Every take and renewal also reports what the book may commit before the next one
(its *ceiling*: what it has committed plus ``report_horizon`` seconds of spend and
twice what is in flight; the book admits nothing beyond it, and a renewal raises
it) and the longest a call may take (the per-request deadline). Leases whose holder
stopped renewing (crashed, cut off) are reclaimed by the next taker once their TTL
and that call time have run out, at what their rows settled plus what the holder
may have committed beyond them (unknown outcome: kept charged). If any statement (or a
ledger write) fails, the book is *blocked*: no paid reservation is admitted until
a statement succeeds again (fail closed; reason ``budget_unavailable``). A budget
the database does not grant to this namespace (not yet written by the operator,
or not this namespace's) holds no money: its requests are refused or fall back
as for an exhausted budget, and the others are unaffected.
Guarantee and proof sketch: docs/ledger.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

from ..contract import BudgetSpec
from ..contract.money import ZERO
from ..ledger import leases
from ..ledger.database import Connection, Database
from .accounts import Reservation
from .book import BudgetBook
from .lease_calls import LeaseCalls
from .lease_reconcile import Answer, LeaseState, apply_answer
from .lease_slots import (
    LeaseSettings,
    Slot,
    headroom,
    report,
    slice_target,
    slot_key,
    update_rate,
)
from .sources import Allowance

__all__ = ["LeaseBudgetSource", "LeaseSettings"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def _probe(connection: Connection) -> bool:
    await connection.execute("SELECT 1")
    return True  # not None: :meth:`LeaseCalls._call` answers None for a failure


class LeaseBudgetSource(LeaseCalls):
    """Leases from ``aegis.lease_*`` for one holder (``namespace/pod``)."""

    def __init__(
        self,
        database: Database,
        holder: str,
        *,
        settings: LeaseSettings | None = None,
        replayed: asyncio.Event | None = None,
    ) -> None:
        """``replayed`` is set once the ledger spool of a previous life is written
        (:attr:`LedgerStore.replayed`); the takeover waits for it."""
        super().__init__(database, settings or LeaseSettings.from_env())
        self.holder = holder
        self.namespace = holder.partition("/")[0]  # of budgets that name none
        self._replayed = replayed
        self._slots: dict[tuple[str, str], Slot] = {}  # (budget key, period)
        self._returns: list[tuple[BudgetSpec, str, Decimal]] = []  # (budget, period, amount)
        self._leases: dict[tuple[str, str], LeaseState] = {}  # beyond the open slots
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self.max_call_seconds = 0  # the longest a call may take (reported with each take)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, book: BudgetBook) -> None:
        """Attach to ``book`` and wait (briefly) for replay and takeover."""
        self._book = book
        self._task = asyncio.create_task(self._run(), name="aegis-budget-leases")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.start_timeout):
                await self._taken_over.wait()
        if not self._taken_over.is_set():
            self._set_available(False)

    async def aclose(self) -> None:
        """Return every unused slice and close the leases (the book must be idle)."""
        task, self._task = self._task, None
        if task is not None:
            # Let a statement under way finish: cancelled after it ran but before
            # its answer was applied, a take would strand its slice until the TTL.
            self._closing = True
            self._wake.set()
            await asyncio.wait({task}, timeout=self.settings.statement_timeout + 1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        book = self._book
        for slot in list(self._slots.values()):
            amount = book.surrender(slot.key, slot.period) if book else ZERO
            self._close(slot, amount)
            self._release(slot)
        self._slots.clear()
        await self._give_back_all(close=True, rounds=5)  # the last chance to give back

    def longest_call(self, seconds: float) -> None:
        """A call may last ``seconds`` (the per-request deadline): reported with every
        take, so that a lease is reclaimed only once its holder's calls are over.
        Never lowered in a life (calls of the old deadline may still be in flight)."""
        self.max_call_seconds = max(self.max_call_seconds, math.ceil(seconds))

    # -- BudgetSource (synchronous: called inside reserve/settle) ----------------

    def _id(self, budget: BudgetSpec) -> str:
        return budget.key(self.namespace).encoded

    def open_account(self, budget: BudgetSpec, period: str) -> Allowance:
        slot = Slot(budget, period, self._loop.time(), self._id(budget))
        self._slots[(slot.key, period)] = slot
        self._wake.set()  # fetch a first slice before the first request needs it
        return Allowance(spent_elsewhere=ZERO, held=ZERO)

    def reopen_account(self, budget: BudgetSpec, period: str, allowance: Allowance) -> Decimal:
        slot = self._slots.get((self._id(budget), period))
        if slot is None:
            return ZERO
        if budget.limit_usd < slot.budget.limit_usd:
            slot.shrink = True  # hand back what the lower limit may not cover
            self._wake.set()
        slot.budget = budget
        return slot.held

    def on_settled(self, reservation: Reservation, amount: Decimal) -> None:
        now = self._loop.time()
        for account in reservation.accounts:
            slot = self._slots.get((account.key, account.period))
            if slot is not None:
                slot.spent_window += amount
                slot.last_active = now
                slot.largest = max(slot.largest, reservation.amount)

    def on_short(self, budget: BudgetSpec, period: str, needed: Decimal) -> None:
        slot = self._slots.get((self._id(budget), period))
        if slot is not None and needed > slot.need:
            slot.need = needed
            self._wake.set()

    def may_grant(self, budget: BudgetSpec, period: str, needed: Decimal) -> bool:
        slot = self._slots.get((self._id(budget), period))
        if slot is None or slot.remaining is None:
            return True  # not asked yet: let the request wait for the first take
        view = self._book.account_view(slot.key, period) if self._book else None
        unused = view[0] - view[1] - view[2] if view else ZERO
        return needed - unused <= slot.remaining

    def refill(self, budget: BudgetSpec, period: str, needed: Decimal) -> Awaitable[None] | None:
        slot = self._slots.get((self._id(budget), period))
        if slot is None or not self.available or not self.may_grant(budget, period, needed):
            return None
        slot.need = max(slot.need, needed)
        if slot.refill is None or slot.refill.done():
            slot.refill = self._loop.create_future()
        slot.queued += needed  # the next report's ceiling admits every waiter
        self._wake.set()
        return asyncio.shield(slot.refill)

    def on_closed(self, budget: BudgetSpec, period: str, unused: Decimal) -> None:
        slot = self._slots.pop((self._id(budget), period), None)
        if slot is None:
            return
        self._close(slot, unused)
        self._release(slot)
        self._move_deadline()
        self._wake.set()

    # -- the background task -------------------------------------------------------

    async def _run(self) -> None:
        settings = self.settings
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.tick):
                    await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                await self._step()
            except Exception:  # a bug must not stop the leases: log and go on
                log.exception("budget lease step failed")
                await asyncio.sleep(settings.retry_interval)

    async def _step(self) -> None:
        if not self._taken_over.is_set():
            if self._replayed is not None and not self._replayed.is_set():
                return
            if await self._call("takeover", lambda c: leases.takeover(c, self.holder)) is None:
                return await asyncio.sleep(self.settings.retry_interval)
            self._taken_over.set()
        if not self.available:
            probe = await self._call("probe", _probe)
            if probe is None:
                for slot in self._slots.values():
                    self._release(slot)
                return await asyncio.sleep(self.settings.retry_interval)
        if self._returns:
            await self._give_back_all(close=True)
        now = self._loop.time()
        for slot in list(self._slots.values()):
            await self._service(slot, now)

    async def _service(self, slot: Slot, now: float) -> None:
        book = self._book
        view = book.account_view(slot.key, slot.period) if book else None
        if book is None or view is None:
            return
        held, settled, reserved = view
        unused = held - settled - reserved
        update_rate(slot, now)
        settings = self.settings
        if slot.period != book.current_period(slot.budget) and reserved == 0:
            # A past period with nothing in flight: hand back the rest, close it.
            self.on_closed(slot.budget, slot.period, book.surrender(slot.key, slot.period))
            await self._give_back_all(close=True)
            return
        if slot.shrink or (unused > 0 and now - slot.last_active >= settings.idle_return):
            slot.shrink = False
            amount = book.surrender(slot.key, slot.period)
            slot.held -= amount
            self._give_back(slot.budget, slot.period, amount)
            await self._give_back_all(close=False)
            return
        if slot.denied_at is not None and now - slot.denied_at < settings.idle_return:
            slot.need = ZERO  # asked again only every idle_return seconds
            self._release(slot)
            return
        target = slice_target(slot, reserved, settings)
        need = max(slot.need - unused, ZERO)
        # The book may commit up to its ceiling before the next report; a renewal
        # raises it (to what it holds at most).
        capped = slot.ceiling is not None and slot.ceiling < held
        room = slot.ceiling - settled - reserved if slot.ceiling is not None else unused
        waiting = slot.refill is not None and not slot.refill.done()
        # Keep the slice topped up while it is being spent (not when idle: the
        # idle money was just given back).
        busy = now - slot.last_active < settings.idle_return
        refill_at = Decimal(settings.refill_at)
        low = busy and unused < target * refill_at
        # Money enough but the ceiling near: a renewal (no take) raises it.
        cramped = busy and capped and room < headroom(slot, reserved, settings) * refill_at
        patient = slot.shortfall and now - slot.last_take < settings.retry_interval * 2
        retry = slot.shortfall and not patient
        if need > 0 or (low and (waiting or not patient)):
            await self._take(slot, max(target - unused, need, ZERO), need, now)
        elif waiting or cramped or now - slot.last_renew >= settings.ttl_seconds / 3 or retry:
            await self._take(slot, ZERO, ZERO, now)  # renew; refresh what is left

    async def _take(self, slot: Slot, want: Decimal, need: Decimal, now: float) -> None:
        budget = slot.budget
        sent = self._loop.time()
        view = self._book.account_view(slot.key, slot.period) if self._book else None
        spare, allowed, held = ZERO, None, ZERO
        if view is not None:
            held, settled, reserved = view
            room = headroom(slot, reserved, self.settings)
            spare, until_answer, allowed = report(
                held, settled + reserved, want, room, slot.ceiling
            )
            self._limit(slot, until_answer)
        try:
            grant = await self._call(
                "take" if want > 0 else "renew",
                lambda c: leases.take(
                    c,
                    budget=budget.key(self.namespace),
                    period=slot.period,
                    holder=self.holder,
                    want=want,
                    need=need,
                    ttl_seconds=self.settings.ttl_seconds,
                    spare=spare,
                    max_call_seconds=self.max_call_seconds,
                ),
            )
        except leases.NotGranted as refused:
            self._not_granted(slot, now, str(refused))
            return
        if grant is None:
            self._lost(budget, slot.period)
            self._release(slot)
            return
        slot.denied_at = None
        if allowed is not None:
            self._limit(slot, min(held + grant.granted, allowed))
        self._answered(budget, slot.period, grant, grant.granted)
        slot.remaining = grant.remaining
        slot.shortfall = grant.granted < want
        slot.last_renew = now
        slot.renewed = sent
        self._move_deadline()
        if want > 0:
            slot.last_take = now
        slot.need = ZERO
        self._release(slot)

    def _not_granted(self, slot: Slot, now: float, reason: str) -> None:
        """The budget holds nothing for this namespace: no money, no retry storm."""
        if slot.remaining is None or slot.remaining > 0:
            log.error("budget %s/%s: %s", *slot_key(slot), reason)
        book = self._book
        if book is not None:
            slot.held -= book.surrender(slot.key, slot.period)
        slot.remaining = ZERO
        slot.shortfall = True
        slot.denied_at = slot.last_take = slot.last_renew = now
        slot.need = ZERO
        self._release(slot)

    async def _give_back_all(self, *, close: bool, rounds: int = 1) -> None:
        # What an answer showed a closed lease still holds (or a lost return's probe)
        # goes in the next round: up to 3 while the database answers; at shutdown
        # ``rounds`` more even when it did not; what is left waits for the next step.
        for attempt in range(max(rounds, 3)):
            pending, self._returns = self._returns, []
            try:
                while pending:
                    budget, period, amount = pending.pop(0)
                    state = self._lease(self._id(budget), period)
                    try:
                        call = self._return_call(budget, period, amount, close)
                        done = await self._call("return", call)
                    finally:  # also when cancelled at shutdown: counted as sent
                        state.returning = max(state.returning - amount, ZERO)
                    if done is None:
                        # Applied or not, we cannot tell: counted as applied; the next
                        # answer for this lease adopts it if the database still holds it.
                        log.warning("could not return %s USD of %s/%s", amount, budget.name, period)
                        self._lost(budget, period)
                    else:
                        self._answered(budget, period, done, ZERO)
            finally:
                self._returns[:0] = pending  # not sent (cancelled): stays queued
            if not self._returns or (not self.available and attempt + 1 >= rounds):
                return

    def _return_call(
        self, budget: BudgetSpec, period: str, amount: Decimal, close: bool
    ) -> Callable[[Connection], Awaitable[leases.Returned]]:
        key = budget.key(self.namespace)
        return lambda c: leases.give_back(
            c, budget=key, period=period, holder=self.holder, amount=amount, close=close
        )

    # -- reconciling the book with the database's answers ----------------------------

    def _lease(self, key: str, period: str) -> LeaseState:
        return self._leases.setdefault((key, period), LeaseState())

    def _give_back(self, budget: BudgetSpec, period: str, amount: Decimal) -> None:
        self._returns.append((budget, period, amount))
        self._lease(self._id(budget), period).returning += amount

    def _close(self, slot: Slot, unused: Decimal) -> None:
        """The slot's account is closed: what it committed stays in the lease."""
        state = self._lease(slot.key, slot.period)
        if state.base is not None:
            state.base += max(slot.held - unused, ZERO)
        self._give_back(slot.budget, slot.period, unused)

    def _lost(self, budget: BudgetSpec, period: str) -> None:
        """A statement of this lease got no answer: ask again soon, so that the next
        answer reconciles (a renewal of an open slot, else an empty return)."""
        slot = self._slots.get((self._id(budget), period))
        if slot is not None:
            slot.last_renew = -1e9
        else:
            self._give_back(budget, period, ZERO)

    def _answered(self, budget: BudgetSpec, period: str, answer: Answer, granted: Decimal) -> None:
        """Book ``granted`` and bring the book in line with the lease the database
        reported; money of a closed lease that it still holds goes back."""
        slot = self._slots.get((self._id(budget), period))
        state = self._lease(self._id(budget), period)
        back = apply_answer(self._book if slot else None, slot, state, answer, granted)
        if back > 0:
            self._give_back(budget, period, back)
            self._wake.set()

    # -- plumbing --------------------------------------------------------------------

    def _move_deadline(self) -> None:
        """The book admits reservations until 3/4 of a TTL after the oldest renewal
        was *sent*: the database's expiry counts from when it ran, later, so a
        sidecar that stalls (paused, starved) stops before its lease can be
        reclaimed."""
        if self._book is not None:
            oldest = min((s.renewed for s in self._slots.values()), default=math.inf)
            self._book.lease_deadline = oldest + self.settings.ttl_seconds * 0.75

    def _limit(self, slot: Slot, ceiling: Decimal) -> None:
        slot.ceiling = ceiling
        if self._book is not None:
            self._book.limit_commitment(slot.key, slot.period, ceiling)

    def _release(self, slot: Slot) -> None:
        """Wake requests waiting for this slot's refill, whatever the outcome."""
        waiter = slot.refill
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        slot.refill = None
        slot.queued = ZERO

    # -- observation ------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        """Per slot: budget, period, held, last seen remaining (for metrics/status)."""
        keys = ("key", "period", "held", "remaining")
        return [
            {"budget": s.budget.name, **{k: getattr(s, k) for k in keys}}
            for s in self._slots.values()
        ]
