"""Retries with backoff and a per-provider circuit breaker.

Retries: only errors marked ``retriable`` (429, 5xx, timeouts, connection
failures) are retried, at most ``maxRetries`` times, never past the call's
deadline. The wait is exponential with jitter, or the provider's ``Retry-After``
when it sent one. A ``Retry-After`` longer than ``max_retry_after`` is not waited
for at all: the error goes back to the executor, which falls back to the next
candidate instead of holding the client.

Circuit breaker (per provider): closed → open after ``failureThreshold``
consecutive retriable failures → half-open once ``openSeconds`` have passed, when
exactly one probe call is let through → closed on its success, open again on its
failure. Non-retriable answers (a 400, a 401) prove the provider is up and count
as success. The clock is injectable so tests need not sleep. The router asks
:meth:`CircuitBreakers.is_open` (its health port,
:class:`~aegis.sidecar.routing.ports.HealthView`, implemented structurally);
metrics read :meth:`CircuitBreakers.states` (0 closed, 1 open, 2 half-open).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from ..contract import ProviderSpec
from .base import (
    Adapter,
    ErrorKind,
    ReportsEnd,
    StreamHandle,
    UpstreamCall,
    UpstreamError,
    UpstreamResult,
    Usage,
)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
StateListener = Callable[[str, "CircuitState"], None]


class CircuitState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 1
    base_delay: float = 0.1
    max_delay: float = 2.0
    max_retry_after: float = 5.0
    jitter: float = 0.5
    """Share of the backoff that is randomised: delay * (1 - jitter + jitter * U[0,1))."""

    def delay(self, retry: int, error: UpstreamError, rng: random.Random) -> float | None:
        """Seconds before retry number ``retry`` (0-based); None = do not retry."""
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return float(error.retry_after)
        backoff = min(self.max_delay, self.base_delay * (2**retry))
        return float(backoff * (1.0 - self.jitter + self.jitter * rng.random()))


class CircuitBreaker:
    """The breaker of one provider (see module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        open_seconds: float = 30.0,
        clock: Clock = time.monotonic,
        listener: StateListener | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._listener = listener
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._reported = CircuitState.CLOSED

    @property
    def state(self) -> CircuitState:
        if (
            self._state is CircuitState.OPEN
            and self._clock() - self._opened_at >= self.open_seconds
        ):
            self._state = CircuitState.HALF_OPEN
            self._probe_in_flight = False
            self._notify()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def is_open(self) -> bool:
        """True when a call now would be refused (open, or half-open with its probe out)."""
        state = self.state
        if state is CircuitState.OPEN:
            return True
        return state is CircuitState.HALF_OPEN and self._probe_in_flight

    def try_acquire(self) -> bool:
        """Permission for one call; in half-open state only the first caller gets it."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        self._state = CircuitState.CLOSED
        self._notify()

    def record_failure(self) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold:
            self._open()

    def release(self) -> None:
        """A call ended without a verdict (cancelled): free the half-open probe slot."""
        self._probe_in_flight = False

    def configure(self, failure_threshold: int, open_seconds: float) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        self._probe_in_flight = False
        self._notify()

    def _notify(self) -> None:
        if self._state is not self._reported:
            self._reported = self._state
            if self._listener is not None:
                self._listener(self.name, self._state)


class CircuitBreakers:
    """All providers' breakers; they implement the router's health port."""

    def __init__(self, *, clock: Clock = time.monotonic, listener: StateListener | None = None):
        self._clock = clock
        self._listener = listener
        self._breakers: dict[str, CircuitBreaker] = {}

    def configure(self, specs: Iterable[ProviderSpec]) -> None:
        """Create or update one breaker per provider; state survives a config reload."""
        seen: set[str] = set()
        for spec in specs:
            seen.add(spec.name)
            cb = spec.circuit_breaker
            breaker = self._breakers.get(spec.name)
            if breaker is None:
                self._breakers[spec.name] = CircuitBreaker(
                    spec.name,
                    failure_threshold=cb.failure_threshold,
                    open_seconds=cb.open_seconds,
                    clock=self._clock,
                    listener=self._listener,
                )
            else:
                breaker.configure(cb.failure_threshold, cb.open_seconds)
        for name in list(self._breakers):
            if name not in seen:
                del self._breakers[name]

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(name, clock=self._clock, listener=self._listener)
            self._breakers[name] = breaker
        return breaker

    def is_open(self, provider_name: str) -> bool:
        breaker = self._breakers.get(provider_name)
        return breaker is not None and breaker.is_open()

    def states(self) -> dict[str, int]:
        return {name: int(b.state) for name, b in self._breakers.items()}


class ResilientAdapter:
    """An adapter with retries and the provider's breaker around every call.

    Same interface as :class:`Adapter`. A stream is retried only while it starts
    (nothing has reached the client yet). Counts calls in flight so a registry
    reload can close the adapter once its last call has finished.
    """

    def __init__(
        self,
        inner: Adapter,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.provider = inner.provider
        self.inner = inner
        self.breaker = breaker
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def chat(self, call: UpstreamCall) -> UpstreamResult:
        self._enter()
        try:
            return await self.run(call, self.inner.chat)
        finally:
            self._leave()

    async def embeddings(self, call: UpstreamCall) -> UpstreamResult:
        self._enter()
        try:
            return await self.run(call, self.inner.embeddings)
        finally:
            self._leave()

    def chat_stream(self, call: UpstreamCall) -> StreamHandle:
        return _ResilientStream(self, call)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def run(self, call: UpstreamCall, op: Callable[[UpstreamCall], Awaitable[T]]) -> T:
        """``op(call)`` under the breaker, retried per the policy (the caller counts
        the call in flight: a layer of coroutine less per request than a wrapper)."""
        retry = 0
        while True:
            if not self.breaker.try_acquire():
                raise UpstreamError(
                    ErrorKind.CIRCUIT_OPEN,
                    "circuit breaker open",
                    provider=self.provider,
                    model=call.models[0],
                    retriable=False,
                )
            try:
                result = await op(call)
            except UpstreamError as error:
                # A garbled answer proves no more about the provider's health than none.
                if error.retriable or error.kind is ErrorKind.PROTOCOL:
                    self.breaker.record_failure()
                else:
                    self.breaker.record_success()
                if not error.retriable or retry >= self.policy.max_retries:
                    raise
                delay = self.policy.delay(retry, error, self._rng)
                remaining = call.remaining(self._clock())
                if delay is None or (remaining is not None and delay >= remaining):
                    raise
                retry += 1
                await self._sleep(delay)
                continue
            except BaseException:
                self.breaker.release()
                raise
            self.breaker.record_success()
            return result

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()


# A stream cut by these counts against the provider (a 4xx-class answer would not).
_STREAM_FAILURES = (ErrorKind.TIMEOUT, ErrorKind.PROTOCOL, ErrorKind.CONNECT)


class _ResilientStream:
    def __init__(self, owner: ResilientAdapter, call: UpstreamCall) -> None:
        self._owner = owner
        self._call = call
        self._handle: StreamHandle | None = None
        self._entered = False

    @property
    def model(self) -> str:
        return self._handle.model if self._handle else self._call.models[0]

    @property
    def usage(self) -> Usage | None:
        return self._handle.usage if self._handle else None

    @property
    def ttfb_s(self) -> float | None:
        return self._handle.ttfb_s if self._handle else None

    async def start(self) -> None:
        owner = self._owner

        async def attempt(call: UpstreamCall) -> StreamHandle:
            handle = owner.inner.chat_stream(call)
            await handle.start()
            return handle

        owner._enter()
        self._entered = True
        try:
            self._handle = await owner.run(self._call, attempt)
        except BaseException:
            self._exit()
            raise

    def __aiter__(self) -> AsyncIterator[bytes]:
        handle = self._handle
        if handle is None:
            raise RuntimeError("start() must succeed before iteration")
        if isinstance(handle, ReportsEnd):  # its iterator as it is: no frame per chunk
            handle.watch_end(self._ended)
            return handle.__aiter__()
        return self._iterate(handle)

    async def _iterate(self, handle: StreamHandle) -> AsyncIterator[bytes]:
        error: UpstreamError | None = None
        try:
            async for data in handle:
                yield data
        except UpstreamError as failure:
            error = failure
            raise
        finally:
            self._ended(error)

    def _ended(self, error: UpstreamError | None) -> None:
        if error is not None and error.kind in _STREAM_FAILURES:
            self._owner.breaker.record_failure()
        self._exit()

    async def aclose(self) -> None:
        try:
            if self._handle is not None:
                await self._handle.aclose()
        finally:
            self._exit()

    def _exit(self) -> None:
        if self._entered:
            self._entered = False
            self._owner._leave()
