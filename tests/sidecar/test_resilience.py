"""Retries and circuit breakers, with an injected clock and sleep (no real waiting)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aegis.sidecar.adapters import (
    CircuitBreaker,
    CircuitBreakers,
    CircuitState,
    ErrorKind,
    ResilientAdapter,
    RetryPolicy,
    UpstreamCall,
    UpstreamError,
    UpstreamResult,
)
from aegis.sidecar.adapters.openai_wire import OpenAIWireAdapter, SharedSession
from aegis.sidecar.contract import ProviderSpec, decode
from aegis.sidecar.fakes import FakeUpstream

MESSAGES = [{"role": "user", "content": "hi"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failure(status: int = 503, retry_after: float | None = None) -> UpstreamError:
    return UpstreamError(ErrorKind.STATUS, "boom", status=status, retry_after=retry_after)


class ScriptedAdapter:
    """Answers from a script: an exception to raise or a result to return."""

    provider = "scripted"

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls = 0

    async def chat(self, call: UpstreamCall) -> UpstreamResult:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return UpstreamResult(status=200, body=b"{}", model=call.models[0], usage=None)

    embeddings = chat

    def chat_stream(self, call: UpstreamCall) -> Any:
        return ScriptedStream(self.script.pop(0), call.models[0])

    async def aclose(self) -> None:
        return None


class ScriptedStream:
    """A stream that does not say when it ends (as any-llm's does not): yields
    ``events``, then raises the exception among them, if any."""

    def __init__(self, events: list[Any], model: str) -> None:
        self.events, self.model = events, model
        self.usage, self.ttfb_s = None, None

    async def start(self) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            if isinstance(event, BaseException):
                raise event
            yield event

    async def aclose(self) -> None:
        return None


def resilient(
    script: list[Any], clock: FakeClock, *, retries: int = 2, threshold: int = 3
) -> tuple[ResilientAdapter, ScriptedAdapter, CircuitBreaker]:
    inner = ScriptedAdapter(script)
    breaker = CircuitBreaker("scripted", failure_threshold=threshold, open_seconds=30, clock=clock)
    adapter = ResilientAdapter(
        inner,
        breaker,
        RetryPolicy(max_retries=retries, base_delay=0.1, max_delay=1.0),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(1),
    )
    return adapter, inner, breaker


def state_of(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


CALL = UpstreamCall(body={"messages": MESSAGES}, models=["m"])


def test_breaker_transitions() -> None:
    clock = FakeClock()
    changes: list[tuple[str, CircuitState]] = []
    breaker = CircuitBreaker(
        "p",
        failure_threshold=3,
        open_seconds=30,
        clock=clock,
        listener=lambda name, state: changes.append((name, state)),
    )
    for _ in range(2):
        assert breaker.try_acquire()
        breaker.record_failure()
    assert state_of(breaker) is CircuitState.CLOSED and not breaker.is_open()
    breaker.record_success()
    for _ in range(3):
        breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN and breaker.is_open()
    assert not breaker.try_acquire()
    clock.now += 29.9
    assert breaker.is_open()
    clock.now += 0.1
    assert state_of(breaker) is CircuitState.HALF_OPEN and not breaker.is_open()
    assert breaker.try_acquire()
    assert breaker.is_open() and not breaker.try_acquire()  # one probe only
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN
    clock.now += 30
    assert breaker.try_acquire()
    breaker.record_success()
    assert state_of(breaker) is CircuitState.CLOSED and breaker.consecutive_failures == 0
    assert [s for _, s in changes] == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


def test_released_probe_lets_the_next_caller_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("p", failure_threshold=1, open_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.try_acquire()
    breaker.release()
    assert breaker.try_acquire()


def test_breakers_health_view_and_states() -> None:
    clock = FakeClock()
    specs = [
        decode(
            ProviderSpec,
            {
                "name": n,
                "type": "openai",
                "models": {"default": "m"},
                "circuitBreaker": {"failureThreshold": 1, "openSeconds": 10},
            },
        )
        for n in ("a", "b")
    ]
    breakers = CircuitBreakers(clock=clock)
    breakers.configure(specs)
    breakers.get("a").record_failure()
    assert breakers.is_open("a") and not breakers.is_open("b") and not breakers.is_open("zzz")
    assert breakers.states() == {"a": 1, "b": 0}
    breakers.configure(specs[:1])
    assert breakers.states() == {"a": 1}
    clock.now += 10
    assert breakers.states() == {"a": 2}


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=0.5, jitter=0.5, max_retry_after=5)
    rng = random.Random(3)
    delays = [policy.delay(i, failure(), rng) for i in range(5)]
    for i, delay in enumerate(delays):
        cap = min(0.5, 0.1 * 2**i)
        assert delay is not None and cap * 0.5 <= delay <= cap
    assert policy.delay(0, failure(429, retry_after=2.0), rng) == 2.0
    assert policy.delay(0, failure(429, retry_after=60.0), rng) is None


async def test_retries_then_succeeds() -> None:
    clock = FakeClock()
    adapter, inner, breaker = resilient([failure(429, 0.7), failure(502), "ok"], clock)
    result = await adapter.chat(CALL)
    assert result.status == 200 and inner.calls == 3
    assert clock.sleeps[0] == 0.7 and 0.1 <= clock.sleeps[1] <= 0.2
    assert state_of(breaker) is CircuitState.CLOSED and breaker.consecutive_failures == 0


async def test_gives_up_after_max_retries() -> None:
    clock = FakeClock()
    adapter, inner, _ = resilient([failure(), failure(), failure(), "ok"], clock, threshold=10)
    with pytest.raises(UpstreamError) as gave_up:
        await adapter.chat(CALL)
    assert gave_up.value.status == 503 and inner.calls == 3 and len(clock.sleeps) == 2


async def test_non_retriable_errors_are_not_retried() -> None:
    clock = FakeClock()
    adapter, inner, breaker = resilient([failure(400), "ok"], clock)
    with pytest.raises(UpstreamError):
        await adapter.chat(CALL)
    assert inner.calls == 1 and clock.sleeps == [] and breaker.consecutive_failures == 0


async def test_retry_respects_deadline_and_retry_after_cap() -> None:
    clock = FakeClock()
    adapter, inner, _ = resilient([failure(429, 3.0), "ok"], clock)
    deadline_call = UpstreamCall(body={}, models=["m"], deadline=clock.now + 1.0)
    with pytest.raises(UpstreamError):
        await adapter.chat(deadline_call)
    assert inner.calls == 1 and clock.sleeps == []
    adapter, inner, _ = resilient([failure(429, 600.0), "ok"], clock)
    with pytest.raises(UpstreamError):
        await adapter.chat(CALL)
    assert inner.calls == 1


async def test_breaker_opens_and_refuses_without_calling() -> None:
    clock = FakeClock()
    adapter, inner, breaker = resilient([failure()] * 3 + ["ok"], clock, retries=5, threshold=3)
    with pytest.raises(UpstreamError) as opened:
        await adapter.chat(CALL)
    assert opened.value.kind is ErrorKind.CIRCUIT_OPEN and not opened.value.retriable
    assert inner.calls == 3 and state_of(breaker) is CircuitState.OPEN
    with pytest.raises(UpstreamError):
        await adapter.chat(CALL)
    assert inner.calls == 3
    clock.now += 30
    assert (await adapter.chat(CALL)).status == 200
    assert state_of(breaker) is CircuitState.CLOSED


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream.start(kind="openai") as upstream:
        yield upstream


async def test_a_stream_that_does_not_report_its_end_is_watched_through_its_iteration() -> None:
    """The breaker counts a stream cut after its first bytes, and the adapter is idle
    once each stream's iteration ended (without ``aclose``), for a stream that does
    not report its end as the OpenAI-wire one does."""
    clock = FakeClock()
    cut = UpstreamError(ErrorKind.PROTOCOL, "cut", partial=True)
    adapter, _, breaker = resilient([[b"data: 1\n\n", cut], [b"data: 2\n\n"]], clock)
    handle = adapter.chat_stream(CALL)
    await handle.start()
    got: list[bytes] = []
    with pytest.raises(UpstreamError):
        async for data in handle:
            got.append(data)
    assert got == [b"data: 1\n\n"] and breaker.consecutive_failures == 1
    handle = adapter.chat_stream(CALL)
    await handle.start()
    assert [data async for data in handle] == [b"data: 2\n\n"]
    await adapter.wait_idle()  # both iterations ended: nothing in flight


async def test_retry_after_from_a_real_429(fake: FakeUpstream) -> None:
    clock = FakeClock()
    spec = decode(
        ProviderSpec,
        {
            "name": "openai",
            "type": "openai",
            "baseURL": fake.base_url,
            "models": {"default": "gpt-4o"},
            "apiKeyEnv": "K",
            "maxRetries": 2,
        },
    )
    session = SharedSession()
    inner = OpenAIWireAdapter(spec, session, env={"K": "sk"})
    breaker = CircuitBreaker("openai", clock=clock)
    adapter = ResilientAdapter(
        inner, breaker, RetryPolicy(max_retries=2), clock=clock, sleep=clock.sleep
    )
    fake.set_knobs(fail_next=2, fail_status=429, retry_after=1.5)
    result = await adapter.chat(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    assert result.status == 200 and clock.sleeps == [1.5, 1.5]
    assert [r["status"] for r in fake.requests] == [429, 429, 200]
    fake.set_knobs(fail_next=1, fail_status=503)
    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    await handle.start()
    assert b"[DONE]" in b"".join([data async for data in handle])
    assert [r["status"] for r in fake.requests][-2:] == [503, 200]
    fake.set_knobs(cut_after_chunks=2)
    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    await handle.start()
    with pytest.raises(UpstreamError):
        async for _ in handle:
            pass
    assert breaker.consecutive_failures == 1
    await adapter.wait_idle()
    await session.aclose()
