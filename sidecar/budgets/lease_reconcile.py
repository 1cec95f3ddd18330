"""Reconciling a lease source's local view with the database's answer (pure).

A lease statement whose answer is lost (the client's timeout fired after the
database committed, or the request never arrived) leaves the book and the lease
apart: a take granted a slice the book never booked (stranded until the lease
closes), or a give-back the book already surrendered was never applied (stranded
likewise). Every answer for the lease (take, renewal, return) carries the
holder's whole lease (``lease_amount``: spent + held) and what its rows settled;
:func:`reconcile` turns that and the local view into an :class:`Adjustment`.

What the database should hold for this holder, budget and period is
``base + returning + held``:

- ``base``: lease money that is not the open slot's: what earlier lives of this
  holder settled or left of unknown outcome (a takeover closed their leases at
  exactly that, so before this life books anything the lease holds nothing else)
  plus what slots of this life that were closed still committed. Learnt from
  ``lease_settled + lease_unknown`` at the first answer, then carried.
- ``returning``: returns queued or sent whose answer has not arrived (a return
  whose answer was lost counts as applied; if it was not, the lease holds more
  and the next answer adopts it).
- ``held``: the open slot's held money (the book's), if a slot is open.

More in the database than that is adopted by the open slot (at most what the
database has unsettled beyond what the book holds unsettled, so money the
database counted as overdraft never becomes spendable), or given back when no
slot is open. Less is surrendered locally, down to what the book has committed:
the book never lets a request reserve money the lease does not have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from ..contract.money import ZERO
from ..ledger import leases
from .book import BudgetBook
from .lease_slots import Slot, slot_key

__all__ = ["Adjustment", "Answer", "LeaseState", "LocalView", "apply_answer", "reconcile"]

log = logging.getLogger(__name__)
Answer = leases.Grant | leases.Returned


class LeaseState:
    """What one lease source knows of its lease on one budget and period, beyond
    the open slot (it outlives slots: a month can be closed and reopened)."""

    __slots__ = ("base", "epoch", "returning")

    def __init__(self) -> None:
        self.base: Decimal | None = None
        self.returning = ZERO
        self.epoch: int | None = None


@dataclass(frozen=True, slots=True)
class LocalView:
    """The local side: the lease state and, when a slot is open, its book account."""

    base: Decimal | None
    returning: Decimal
    held: Decimal | None = None  # the open slot's held money; None: no open slot
    settled: Decimal = ZERO  # the book's settled money on that slot
    unused: Decimal = ZERO  # held, neither settled nor reserved


@dataclass(frozen=True, slots=True)
class Adjustment:
    base: Decimal  # the lease state's base from now on
    adopt: Decimal = ZERO  # grant to the open slot's book
    drop: Decimal = ZERO  # surrender locally (the database does not hold it)
    give_back: Decimal = ZERO  # return to the database (no slot is open)


def reconcile(
    local: LocalView, lease_amount: Decimal, lease_settled: Decimal, unknown: Decimal = ZERO
) -> Adjustment:
    """The adjustment that brings ``local`` in line with the database's answer
    (same lease epoch; an epoch change is a reclaim, handled by the caller).
    ``unknown``: money the lease keeps for calls of an earlier life whose outcome is
    unknown; part of the base, never adopted nor given back."""
    base = lease_settled + unknown if local.base is None else local.base
    extra = lease_amount - base - local.returning - (local.held or ZERO)
    unsettled = max(lease_amount - lease_settled - unknown, ZERO)
    if local.held is None:
        return Adjustment(base, give_back=min(max(extra, ZERO), unsettled))
    if extra > 0:
        room = unsettled - (local.held - local.settled)
        return Adjustment(base, adopt=max(min(extra, room), ZERO))
    if extra < 0:
        return Adjustment(base, drop=min(-extra, local.unused))
    return Adjustment(base)


def apply_answer(
    book: BudgetBook | None,
    slot: Slot | None,
    state: LeaseState,
    answer: Answer,
    granted: Decimal,
) -> Decimal:
    """Book ``granted`` on the open ``slot`` (if any) and apply :func:`reconcile`
    to ``book``; returns what to give back (the lease's slot is closed)."""
    open_slot = slot if book is not None else None
    reclaimed = state.epoch is not None and answer.epoch != state.epoch
    state.epoch = answer.epoch
    if book is not None and open_slot is not None:
        name, period = slot_key(open_slot)
        if reclaimed:
            # Someone closed this lease while we could not renew it: what we held
            # beyond our committed money is no longer ours.
            log.warning("lease %s/%s was reclaimed; dropping the local slice", name, period)
            open_slot.held -= book.surrender(name, period)
        if granted > 0 and book.account_view(name, period) is not None:
            book.grant(name, period, granted)
            open_slot.held += granted
    view = None
    if book is not None and open_slot is not None:
        view = book.account_view(*slot_key(open_slot))
    if reclaimed:  # what the lease holds now is the new starting point
        state.base = answer.lease_amount - state.returning - (view[0] if view else ZERO)
    local = LocalView(state.base, state.returning)
    if view is not None:
        held, settled, reserved = view
        local = LocalView(state.base, state.returning, held, settled, held - settled - reserved)
    change = reconcile(local, answer.lease_amount, answer.lease_settled, answer.unknown)
    state.base = change.base
    if book is not None and open_slot is not None and view is not None:
        name, period = slot_key(open_slot)
        if change.adopt > 0:
            log.warning("lease %s/%s: %s USD not booked, adopted", name, period, change.adopt)
            book.grant(name, period, change.adopt)
            open_slot.held += change.adopt
        if change.drop > 0:
            log.warning("lease %s/%s: %s USD not in the lease, dropped", name, period, change.drop)
            open_slot.held -= book.surrender(name, period, change.drop)
    elif change.give_back > 0:
        log.warning("closed lease still holds %s USD: given back", change.give_back)
    return change.give_back
