"""One rate limit inside one sidecar: the slots it holds, and which of them are busy.

A limit of R per window (60 s) is R *slots*. A sidecar holds some of them (all of
them standalone; a lease of the shared limit otherwise) and admits a request only
when enough held slots are free: one slot per request, or the token estimate. An
admission *reserves* its slots; when the call is made (requests) or settles
(tokens) the slots it used become *busy* until ``window`` seconds later, and only
then free again. So at any instant every admission of the last window still
occupies slots, and the admissions of any window are at most what is held.

Pure and synchronous: the clock is passed in (``now``, monotonic seconds), so tests
drive time by hand.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from ..contract import RateUnit

DEFAULT_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class PoolKey:
    """Which limit: ``kind`` Route or Budget, the route's namespace and name (a
    budget's key: its namespace, ``''`` for a cluster budget, and name), the unit."""

    kind: str
    namespace: str
    name: str
    unit: RateUnit

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}/{self.unit.value}"


class Timeline:
    """Amounts that count until a time: busy slots, or recent demand."""

    __slots__ = ("_entries", "total")

    def __init__(self) -> None:
        self._entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def add(self, until: float, amount: int) -> None:
        entries = self._entries
        if entries and entries[-1][0] > until:  # keep order (the clock never goes back)
            until = entries[-1][0]
        if entries and entries[-1][0] == until:
            entries[-1] = (until, entries[-1][1] + amount)
        else:
            entries.append((until, amount))
        self.total += amount

    def expire(self, now: float) -> None:
        entries = self._entries
        while entries and entries[0][0] <= now:
            self.total -= entries.popleft()[1]

    def freed_by(self, amount: int, now: float) -> float | None:
        """Seconds from ``now`` until ``amount`` of the entries have ended (``None``:
        they never add up to it)."""
        if amount <= 0:
            return 0.0
        count = 0
        for until, value in self._entries:
            count += value
            if count >= amount:
                return max(until - now, 0.0)
        return None

    def last(self, now: float) -> float:
        """Seconds until the last entry ends (0 when empty)."""
        return max(self._entries[-1][0] - now, 0.0) if self._entries else 0.0


class SlotPool:
    """The slots of one limit held by this sidecar."""

    __slots__ = (
        "busy",
        "demand",
        "held",
        "key",
        "limit",
        "overruns",
        "refused",
        "reserved",
        "shared_room",
        "window",
    )

    def __init__(
        self, key: PoolKey, limit: int, *, held: int = 0, window: float = DEFAULT_WINDOW
    ) -> None:
        self.key = key
        self.limit = limit
        self.window = window
        self.held = held  # slots this sidecar may use (the lease, or the whole limit)
        self.reserved = 0  # admitted, not yet used (a token estimate, a request not yet sent)
        self.busy = Timeline()  # used, until a window after use
        self.demand = Timeline()  # units asked for (admitted or refused), for a window
        self.shared_room: int | None = None  # slots nobody holds, as last seen (leases)
        self.refused = 0
        self.overruns = 0  # tokens used beyond what was reserved

    def expire(self, now: float) -> None:
        self.busy.expire(now)
        self.demand.expire(now)

    def free(self, now: float) -> int:
        """Held slots neither busy nor reserved (negative after an overrun)."""
        self.busy.expire(now)
        return self.held - self.busy.total - self.reserved

    def committed(self, now: float) -> int:
        """Slots that may not be given back now: busy or reserved."""
        self.busy.expire(now)
        return self.busy.total + self.reserved

    def try_reserve(self, amount: int, now: float) -> bool:
        """Reserve ``amount`` slots if they are free; counts the demand either way."""
        self.demand.expire(now)
        self.demand.add(now + self.window, amount)
        if amount <= self.free(now):
            self.reserved += amount
            return True
        self.refused += 1
        return False

    def unreserve(self, amount: int) -> None:
        """Undo a reservation of ``amount`` whose call was never made."""
        self.reserved = max(self.reserved - amount, 0)

    def use(self, reserved: int, used: int, now: float) -> None:
        """The admission that reserved ``reserved`` used ``used``: the reservation ends,
        what was used is busy for a window from ``now`` (more than reserved: an overrun,
        still counted, so later admissions wait for it)."""
        self.reserved = max(self.reserved - reserved, 0)
        if used > reserved:
            self.overruns += used - reserved
        if used > 0:
            self.busy.add(now + self.window, used)

    def retry_after(self, amount: int, now: float) -> float | None:
        """Seconds until ``amount`` slots are free here with what is held now
        (``None``: not before more slots are held)."""
        missing = amount - self.free(now)
        if missing <= 0:
            return 0.0
        return self.busy.freed_by(missing, now)

    def remaining(self, now: float) -> int:
        """What could still be admitted now: free held slots plus the shared room."""
        return max(self.free(now), 0) + max(self.shared_room or 0, 0)

    def reset_in(self, now: float) -> float:
        """Seconds until every slot this sidecar used is free again."""
        return self.busy.last(now)

    def want(self, need: int, now: float, *, headroom: float, fair: int | None) -> int:
        """How many slots to hold: recent demand with ``headroom``, at least what is
        committed plus ``need`` (a reservation that did not fit); at most ``fair`` (a
        fair share while other sidecars are short), never below what is committed."""
        self.expire(now)
        committed = self.busy.total + self.reserved
        target = max(math.ceil(self.demand.total * headroom), committed + need)
        target = min(target, self.limit)
        if fair is not None:
            target = min(target, max(fair, 1))
        return max(target, committed)
