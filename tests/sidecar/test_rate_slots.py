"""Properties of the rate-limit slots, on a clock driven by the test (no sleeping).

Hypothesis draws a run of events on one or more sidecars sharing a limit of R per
window: admissions (one request and a token estimate), calls, settlements (tokens
used, at most the estimate, or beyond it for a call without a cap), releases of
requests that never called, time passing, and the shared limit moving slots
between sidecars as leases do (a sidecar gets slots only while the sum held stays
within R, and gives back only slots that are neither busy nor reserved). After
every event, for the window ending then:

- requests that called a provider, admitted in the window: at most R;
- tokens of calls admitted in the window (used when settled, else the estimate):
  at most R plus the overruns settled in the window (zero without overruns).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.sidecar.contract import RateUnit
from aegis.sidecar.limits import Admission, PoolKey, RateLimiter, RateRefused, SlotSource
from aegis.sidecar.limits.pool import SlotPool

WINDOW = 60.0
REQUESTS = PoolKey("Route", "team-a", "chat", RateUnit.REQUESTS)
TOKENS = PoolKey("Route", "team-a", "chat", RateUnit.TOKENS)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Leased:
    """Holds what the test's shared limit granted (nothing at first)."""

    def opened(self, pool: SlotPool) -> None:
        return None

    def closed(self, pool: SlotPool) -> None:
        return None

    def short(self, pool: SlotPool, need: int) -> None:
        return None


@dataclass
class Call:
    sidecar: int
    admission: Admission
    admitted_at: float
    estimate: int
    called: bool = False
    used: int | None = None
    settled_at: float | None = None


@dataclass
class World:
    limit_requests: int
    limit_tokens: int
    clock: Clock = field(default_factory=Clock)
    limiters: list[RateLimiter] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def check(self) -> None:
        now = self.clock.now
        start = now - WINDOW
        in_window = [c for c in self.calls if start < c.admitted_at <= now]
        requests = sum(1 for c in in_window if c.called)
        assert requests <= self.limit_requests
        tokens = sum(
            c.used if c.used is not None and c.settled_at is not None else c.estimate
            for c in in_window
            if c.called or c.used is None
        )
        overruns = sum(
            max(c.used - c.estimate, 0)
            for c in self.calls
            if c.used is not None and c.settled_at is not None and start < c.settled_at <= now
        )
        assert tokens <= self.limit_tokens + overruns


def _world(sidecars: int, requests: int, tokens: int, source: SlotSource | None) -> World:
    world = World(requests, tokens)
    for _ in range(sidecars):
        limiter = RateLimiter(source, clock=world.clock, window=WINDOW)
        limiter.configure([(REQUESTS, requests), (TOKENS, tokens)])
        world.limiters.append(limiter)
    return world


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["admit", "admit", "call", "settle", "release", "time", "move"]),
        st.integers(0, 3),  # sidecar
        st.integers(1, 400),  # estimate / seconds / slots
        st.integers(0, 600),  # tokens used
    ),
    max_size=120,
)


def _run(world: World, events: list[tuple[str, int, int, int]], overrun: bool) -> None:
    sidecars = len(world.limiters)
    for kind, drawn, size, used in events:
        who = drawn % sidecars
        limiter = world.limiters[who]
        open_calls = [c for c in world.calls if c.sidecar == who and c.settled_at is None]
        waiting = [c for c in open_calls if not c.called]
        if kind == "admit":
            outcome = limiter.admit([(REQUESTS, 1), (TOKENS, size)])
            if not isinstance(outcome, RateRefused):
                world.calls.append(Call(who, outcome, world.clock.now, size))
        elif kind == "call" and waiting:
            call = waiting[0]
            call.admission.called()
            call.called = True
        elif kind == "settle" and open_calls:
            call = open_calls[-1]
            actual = used if overrun else min(used, call.estimate)
            if not call.called:
                call.admission.called()
                call.called = True
            call.admission.settle(actual)
            call.used, call.settled_at = actual, world.clock.now
        elif kind == "release" and waiting:
            call = waiting[0]
            call.admission.release()
            world.calls.remove(call)
        elif kind == "time":
            world.clock.now += size / 10
        elif kind == "move":
            _move(world, who, size)
        world.check()


def _move(world: World, who: int, size: int) -> None:
    """The shared limit: sidecar ``who`` gives back all it can, then the next one
    takes up to ``size`` of what nobody holds (leases do the same, in SQL)."""
    now = world.clock.now
    for key, limit in ((REQUESTS, world.limit_requests), (TOKENS, world.limit_tokens)):
        pools = [limiter.pools[key] for limiter in world.limiters]
        giver = pools[who]
        giver.held = min(giver.held, max(giver.committed(now), 0))
        taker = pools[(who + 1) % len(pools)]
        room = limit - sum(p.held for p in pools)
        taker.held += max(min(size, room), 0)
        assert sum(p.held for p in pools) <= limit


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.integers(1, 20), st.integers(50, 2000))
def test_one_sidecar_never_admits_more_than_the_limit(
    events: list[tuple[str, int, int, int]], requests: int, tokens: int
) -> None:
    world = _world(1, requests, tokens, None)  # standalone: holds the whole limit
    _run(world, events, overrun=False)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.integers(1, 20), st.integers(50, 2000), st.integers(2, 4))
def test_sidecars_sharing_a_limit_never_admit_more_than_it(
    events: list[tuple[str, int, int, int]], requests: int, tokens: int, sidecars: int
) -> None:
    world = _world(sidecars, requests, tokens, Leased())
    _run(world, events, overrun=False)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.integers(1, 20), st.integers(50, 2000), st.integers(1, 3))
def test_token_overruns_are_bounded_by_what_was_used_beyond_the_estimates(
    events: list[tuple[str, int, int, int]], requests: int, tokens: int, sidecars: int
) -> None:
    world = _world(sidecars, requests, tokens, None if sidecars == 1 else Leased())
    _run(world, events, overrun=True)


def test_a_slot_is_free_again_a_window_after_its_use_and_retry_after_says_when() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, window=WINDOW)
    limiter.configure([(REQUESTS, 2)])
    first = limiter.admit([(REQUESTS, 1)])
    assert isinstance(first, Admission)
    first.called()
    clock.now += 10
    second = limiter.admit([(REQUESTS, 1)])
    assert isinstance(second, Admission)
    second.called()
    clock.now += 5
    refused = limiter.admit([(REQUESTS, 1)])
    assert isinstance(refused, RateRefused)
    assert refused.key == REQUESTS
    assert refused.retry_after == WINDOW - 15  # the first slot frees 60 s after its use
    assert refused.states[0].remaining == 0
    assert refused.states[0].reset_seconds == WINDOW - 5  # the second one's
    clock.now += refused.retry_after
    assert isinstance(limiter.admit([(REQUESTS, 1)]), Admission)


def test_a_request_that_never_called_gives_its_slot_back_at_once() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, window=WINDOW)
    limiter.configure([(REQUESTS, 1), (TOKENS, 100)])
    admitted = limiter.admit([(REQUESTS, 1), (TOKENS, 80)])
    assert isinstance(admitted, Admission)
    assert isinstance(limiter.admit([(REQUESTS, 1), (TOKENS, 10)]), RateRefused)
    admitted.release()
    assert isinstance(limiter.admit([(REQUESTS, 1), (TOKENS, 10)]), Admission)


def test_unused_tokens_return_at_settlement_and_used_ones_stay_busy_a_window() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, window=WINDOW)
    limiter.configure([(TOKENS, 1000)])
    admitted = limiter.admit([(TOKENS, 900)])
    assert isinstance(admitted, Admission)
    admitted.called()
    assert isinstance(limiter.admit([(TOKENS, 200)]), RateRefused)
    clock.now += 3
    admitted.settle(300)  # 600 of the estimate come back now
    assert limiter.pools[TOKENS].free(clock.now) == 700
    clock.now += WINDOW - 0.5
    assert limiter.pools[TOKENS].free(clock.now) == 700
    clock.now += 0.5
    assert limiter.pools[TOKENS].free(clock.now) == 1000


def test_all_or_nothing_across_limits() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, window=WINDOW)
    budget = PoolKey("Budget", "", "company", RateUnit.REQUESTS)
    limiter.configure([(REQUESTS, 5), (budget, 1)])
    first = limiter.admit([(REQUESTS, 1), (budget, 1)])  # held: a dropped one is released
    assert isinstance(first, Admission)
    refused = limiter.admit([(REQUESTS, 1), (budget, 1)])
    assert isinstance(refused, RateRefused) and refused.key == budget
    assert limiter.pools[REQUESTS].reserved == 1  # the route's slot was not kept


def test_an_admission_dropped_unsettled_gives_back_what_no_call_used() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, window=WINDOW)
    limiter.configure([(REQUESTS, 2), (TOKENS, 100)])
    never_called = limiter.admit([(REQUESTS, 1), (TOKENS, 40)])
    called = limiter.admit([(REQUESTS, 1), (TOKENS, 40)])
    assert isinstance(never_called, Admission) and isinstance(called, Admission)
    called.called()
    del never_called, called  # a request cancelled before it was recorded
    requests, tokens = limiter.pools[REQUESTS], limiter.pools[TOKENS]
    assert (requests.reserved, tokens.reserved) == (0, 0)
    assert (requests.busy.total, tokens.busy.total) == (1, 40)  # the call's, unknown: kept
