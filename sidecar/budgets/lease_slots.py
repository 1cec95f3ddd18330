"""Settings and per-slot state of the lease source (:mod:`aegis.sidecar.budgets.leases`)."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import ROUND_CEILING, Decimal
from typing import Any

from ..contract import BudgetSpec
from ..contract.money import ZERO, quantize_usd


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """Tuning of the lease source; ``from_env`` reads ``AEGIS_LEASE_<FIELD>``."""

    ttl_seconds: int = 60
    tick: float = 0.05  # how often the background task looks at the slots
    horizon: float = 10.0  # a slice should last about this long at the current rate
    refill_at: float = 0.5  # top up when less than this share of the target is unused
    idle_return: float = 30.0  # give back money unused for this long
    min_slice_share: Decimal = Decimal("0.002")  # of the limit
    max_slice_share: Decimal = Decimal("0.25")
    statement_timeout: float = 2.0
    retry_interval: float = 0.5  # probe this often while blocked or exhausted
    start_timeout: float = 5.0  # how long start() waits for replay + takeover
    report_horizon: float = 2.0  # the book may commit this long's spend between reports

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LeaseSettings:
        """Defaults, overridden by ``AEGIS_LEASE_TTL_SECONDS`` and the like."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = env.get(f"AEGIS_LEASE_{item.name.upper()}")
            if raw:
                kind = type(getattr(cls(), item.name))
                values[item.name] = kind(raw)
        return cls(**values)


class Slot:
    """This sidecar's lease on one budget in one period."""

    __slots__ = (
        "budget",
        "ceiling",
        "denied_at",
        "held",
        "key",
        "largest",
        "last_active",
        "last_renew",
        "last_take",
        "need",
        "period",
        "queued",
        "rate",
        "rate_since",
        "refill",
        "remaining",
        "renewed",
        "shortfall",
        "shrink",
        "spent_window",
    )

    def __init__(self, budget: BudgetSpec, period: str, now: float, key: str) -> None:
        self.budget = budget
        self.key = key  # the budget's ledger key, which names its account in the book
        self.period = period
        self.held = ZERO  # granted to this book minus given back (= the book's held)
        # What the book may commit (settled plus reserved) until the next report: the
        # database keeps the lease's exposure to match (see :func:`report`).
        self.ceiling: Decimal | None = None
        self.largest = ZERO  # the largest reservation settled lately (halves when idle)
        self.need = ZERO  # largest reservation that did not fit since the last take
        # The reservations waiting for the refill under way, all of them: the ceiling a
        # report sets must admit each, not only the largest.
        self.queued = ZERO
        self.refill: asyncio.Future[None] | None = None
        self.remaining: Decimal | None = None  # the budget's uncommitted money, last seen
        self.shortfall = False  # the last take could not give what was wanted
        self.shrink = False  # return unused money at the next tick (limit lowered)
        self.denied_at: float | None = None  # the database refused: not this namespace's
        self.last_take = self.last_renew = -1e9
        self.renewed = math.inf  # when the last successful take/renew was sent
        self.last_active = now
        self.rate = 0.0  # USD per second settled, smoothed
        self.rate_since = now
        self.spent_window = ZERO


def slot_key(slot: Slot) -> tuple[str, str]:
    return slot.key, slot.period


def slice_target(slot: Slot, reserved: Decimal, settings: LeaseSettings) -> Decimal:
    """Slice size: ``horizon`` seconds of spend plus twice what is in flight,
    within [min_slice_share, max_slice_share] of the limit."""
    limit = slot.budget.limit_usd
    by_rate = Decimal(slot.rate * settings.horizon) + 2 * reserved + 8 * slot.need
    low = limit * settings.min_slice_share
    high = limit * settings.max_slice_share
    return quantize_usd(min(max(by_rate, low), high), ROUND_CEILING)


def update_rate(slot: Slot, now: float) -> None:
    """Fold the spend settled since the last update into the smoothed rate."""
    elapsed = now - slot.rate_since
    if elapsed >= 1.0:
        current = float(slot.spent_window) / elapsed
        slot.rate = current if slot.rate == 0 else 0.7 * slot.rate + 0.3 * current
        if slot.spent_window == 0:  # idle: the largest reservation fades too
            slot.largest = quantize_usd(slot.largest / 2)
        slot.spent_window = ZERO
        slot.rate_since = now


def headroom(slot: Slot, reserved: Decimal, settings: LeaseSettings) -> Decimal:
    """What the book may commit beyond what it has, until its next report:
    ``report_horizon`` seconds of spend plus twice what is in flight, and at least
    eight of the largest recent reservations (so a trickle of requests needs no report
    each), at most a slice; plus the reservations waiting for room (all of them:
    concurrent first requests of a period wait together)."""
    by_rate = max(Decimal(slot.rate * settings.report_horizon) + 2 * reserved, 8 * slot.largest)
    room = min(by_rate, slice_target(slot, reserved, settings)) + max(slot.need, slot.queued)
    return quantize_usd(room, ROUND_CEILING)


def report(
    held: Decimal, committed: Decimal, want: Decimal, room: Decimal, ceiling: Decimal | None
) -> tuple[Decimal, Decimal, Decimal]:
    """What a take (or renewal: ``want == 0``) reports, and the book's ceilings.

    The holder may commit what it has committed plus ``room`` before its next
    report; the rest of what it holds (with ``want``, were it all granted) is
    *spare*: if the holder dies, the database keeps ``lease amount - spare`` (its
    exposure) charged and returns the spare to the budget; what a take does not
    grant, the database takes off the spare. Returns ``(spare, until_answer,
    allowed)``: the book's ceiling while the statement is on its way (the database
    may apply it before the answer comes back, so never above the old one), and
    ``allowed``: once answered, the ceiling is ``min(held + granted, allowed)``,
    which is the database's exposure less what the lease held before this life.
    """
    allowed = min(held + want, committed + room)
    bound = min(held, allowed)
    until_answer = bound if ceiling is None else min(ceiling, bound)
    return held + want - allowed, until_answer, allowed
