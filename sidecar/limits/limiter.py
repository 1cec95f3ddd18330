"""The rate limits of one sidecar: admit a request on every limit it falls under, or
on none.

A :class:`RateLimiter` keeps a :class:`~.pool.SlotPool` per limit in force (the
route's, and those of the budgets a call is charged to). :meth:`RateLimiter.admit`
reserves one request slot and the token estimate on each limit asked, atomically
(one synchronous step on the event loop, so concurrent requests never both take the
last slot); the exchange then marks the call made (:meth:`Admission.called`: its
request slots are busy for a window from then) and settles the tokens it used
(:meth:`Admission.settle`), or releases what was never used
(:meth:`Admission.release`).

How many slots a pool holds comes from its :class:`SlotSource`: the whole limit in
one process (:class:`LocalSlots`), or leases of the shared limit
(:mod:`.leases`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..contract import RateUnit
from .pool import DEFAULT_WINDOW, PoolKey, SlotPool

Demand = tuple[PoolKey, int]  # (limit, units): 1 request, or the token estimate


class SlotSource(Protocol):
    """Says how many slots each pool holds. Synchronous, no I/O (runs inside
    ``admit``); a source that needs I/O does it in its own task."""

    def opened(self, pool: SlotPool) -> None:
        """``pool`` came into force (first use, or a reconfigure)."""
        ...

    def closed(self, pool: SlotPool) -> None:
        """``pool`` is no longer in force."""
        ...

    def short(self, pool: SlotPool, need: int) -> Awaitable[None] | None:
        """A reservation of ``need`` did not fit: something to await before trying
        again, or ``None`` when waiting cannot help."""
        ...


class LocalSlots:
    """One process is the only user of its limits: every pool holds all of it."""

    def opened(self, pool: SlotPool) -> None:
        pool.held = pool.limit

    def closed(self, pool: SlotPool) -> None:
        return None

    def short(self, pool: SlotPool, need: int) -> Awaitable[None] | None:
        return None


@dataclass(frozen=True, slots=True)
class PoolState:
    """What the x-ratelimit headers say about one limit."""

    key: PoolKey
    limit: int
    remaining: int
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class RateRefused:
    """No admission: ``key`` has no room for ``needed``; try again in ``retry_after`` s."""

    key: PoolKey
    needed: int
    retry_after: float
    states: tuple[PoolState, ...]


@dataclass(slots=True)
class Admission:
    """Slots reserved for one request on one or more limits."""

    limiter: RateLimiter
    charges: list[tuple[SlotPool, int]] = field(default_factory=list)
    made: bool = False  # a provider call was made under it
    done: bool = False
    #: The providers whose calls it covers (a budget's); ``None``: every call (a route's).
    providers: frozenset[str] | None = None

    def called(self) -> None:
        """A provider call starts: the request slots are busy for a window from now
        (further calls of the same request take no more)."""
        if self.made or self.done:
            return
        self.made = True
        now = self.limiter.clock()
        for pool, amount in self.charges:
            if pool.key.unit is RateUnit.REQUESTS:
                pool.use(amount, amount, now)

    def settle(self, tokens: int | None) -> None:
        """The request is over: ``tokens`` used (``None``: unknown, the whole
        estimate counts when a call was made). Idempotent."""
        if self.done:
            return
        self.done = True
        now = self.limiter.clock()
        for pool, amount in self.charges:
            if pool.key.unit is RateUnit.REQUESTS:
                if not self.made:
                    pool.unreserve(amount)
                continue
            if not self.made:
                pool.unreserve(amount)
            else:
                pool.use(amount, amount if tokens is None else tokens, now)

    def finish(self, provider: str | None, tokens: int | None) -> None:
        """The request is over and ``provider`` answered it (``None``: nobody), using
        ``tokens`` (``None``: unknown, the estimate counts). Calls that failed, or
        were made under another admission, used none of its tokens."""
        answered = provider is not None and (self.providers is None or provider in self.providers)
        self.settle(tokens if answered else 0)

    def release(self) -> None:
        """No call was made (or its tokens are none): give every slot back now."""
        self.settle(0 if self.made else None)

    def __del__(self) -> None:
        # A request that ended without being recorded (cancelled, or refused without
        # a row) must not keep its reservation: settled as unknown (the estimate of a
        # call that was made stays busy, the rest comes back).
        if not self.done:
            self.settle(None)

    def limit_keys(self) -> set[PoolKey]:
        return {pool.key for pool, _ in self.charges}

    def states(self) -> tuple[PoolState, ...]:
        return self.limiter.states(pool.key for pool, _ in self.charges)


class RateLimiter:
    """Every limit in force in this sidecar, and their admissions."""

    def __init__(
        self,
        source: SlotSource | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        window: float = DEFAULT_WINDOW,
    ) -> None:
        self.source: SlotSource = source or LocalSlots()
        self.clock = clock
        self.window = window
        self.pools: dict[PoolKey, SlotPool] = {}
        self.refusals: dict[PoolKey, int] = {}

    def configure(self, limits: Iterable[tuple[PoolKey, int]]) -> None:
        """The limits in force now (from the config); a changed limit keeps the
        pool's busy slots, a removed one is closed."""
        wanted = dict(limits)
        for key in list(self.pools):
            if key not in wanted:
                self.source.closed(self.pools.pop(key))
        for key, limit in wanted.items():
            pool = self.pools.get(key)
            if pool is None:
                pool = SlotPool(key, limit, window=self.window)
                self.pools[key] = pool
                self.source.opened(pool)
            elif pool.limit != limit:
                pool.limit = limit
                self.source.opened(pool)

    def use_source(self, source: SlotSource) -> None:
        """Take slots from ``source`` from now on (leases: nothing is held until the
        first answer)."""
        self.source = source
        for pool in self.pools.values():
            pool.held = 0
            source.opened(pool)

    def admit(self, demands: Sequence[Demand]) -> Admission | RateRefused:
        """Reserve every demand, or none; unknown keys (no such limit) are skipped."""
        now = self.clock()
        admission = Admission(self)
        for key, amount in demands:
            pool = self.pools.get(key)
            if pool is None:
                continue
            if not pool.try_reserve(amount, now):
                for taken, reserved in admission.charges:
                    taken.unreserve(reserved)
                admission.charges.clear()
                admission.done = True
                return self._refused(pool, amount, demands, now)
            admission.charges.append((pool, amount))
        return admission

    async def acquire(self, demands: Sequence[Demand]) -> Admission | RateRefused:
        """:meth:`admit`, waiting once for a top-up when the source says it may help."""
        outcome = self.admit(demands)
        if isinstance(outcome, Admission):
            return outcome
        pool = self.pools[outcome.key]
        waiting = self.source.short(pool, outcome.needed)
        if waiting is None:
            return outcome
        await waiting
        return self.admit(demands)

    def _refused(
        self, pool: SlotPool, amount: int, demands: Sequence[Demand], now: float
    ) -> RateRefused:
        self.refusals[pool.key] = self.refusals.get(pool.key, 0) + 1
        wait = pool.retry_after(amount, now)
        if wait is None:  # holds too little: slots must come back to the shared limit
            wait = pool.window / 4
        return RateRefused(pool.key, amount, wait, self.states(key for key, _ in demands))

    def states(self, keys: Iterable[PoolKey]) -> tuple[PoolState, ...]:
        now = self.clock()
        found: list[PoolState] = []
        for key in dict.fromkeys(keys):
            pool = self.pools.get(key)
            if pool is not None:
                found.append(PoolState(key, pool.limit, pool.remaining(now), pool.reset_in(now)))
        return tuple(found)


WINDOW_ENV = "AEGIS_RATE_WINDOW_SECONDS"


def window_from_env(environ: Mapping[str, str]) -> float:
    """The window (60 s); ``AEGIS_RATE_WINDOW_SECONDS`` shortens it for tests only
    (a limit then counts per that window, whatever its name says)."""
    raw = environ.get(WINDOW_ENV)
    return float(raw) if raw else DEFAULT_WINDOW
