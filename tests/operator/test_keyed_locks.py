"""The operator's per-object locks: one holder per key at a time, and a long wait or
hold is logged with the key (which handler kept which object, for how long)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aegis.operator.controllers.context import KeyedLocks

KEY = ("LLMRoute", "shop", "api")


async def test_holders_of_one_key_take_turns_and_other_keys_do_not_wait() -> None:
    locks = KeyedLocks()
    inside, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with locks.hold(KEY):
            order.append("first in")
            inside.set()
            await release.wait()
            order.append("first out")

    async def second() -> None:
        async with locks.hold(KEY):
            order.append("second in")

    task = asyncio.create_task(first())
    await inside.wait()
    waiting = asyncio.create_task(second())
    async with locks.hold(("LLMRoute", "shop", "other")):  # another key: no wait
        order.append("other key")
    assert not waiting.done()
    release.set()
    await asyncio.gather(task, waiting)
    assert order == ["first in", "other key", "first out", "second in"]


async def test_a_long_wait_and_a_long_hold_are_logged_with_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    locks = KeyedLocks(slow=0.0)  # every wait and hold counts as long
    inside, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with locks.hold(KEY):
            inside.set()
            await release.wait()

    with caplog.at_level(logging.WARNING, logger="aegis.operator.controllers.context"):
        task = asyncio.create_task(holder())
        await inside.wait()
        asking = asyncio.Event()
        waiter = asyncio.create_task(_take(locks, asking))
        await asking.wait()  # set just before it asks: it is queued on the lock now
        assert not waiter.done()
        release.set()
        await asyncio.gather(task, waiter)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("waited ") and str(KEY) in m for m in messages), messages
    assert any(m.startswith(f"held the lock of {KEY}") for m in messages), messages


async def test_quick_holds_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    locks = KeyedLocks()
    with caplog.at_level(logging.WARNING, logger="aegis.operator.controllers.context"):
        for _ in range(3):
            async with locks.hold(KEY):
                pass
    assert caplog.records == []


async def _take(locks: KeyedLocks, asking: asyncio.Event) -> None:
    asking.set()  # no await until the lock: the setter resumes once this one waits
    async with locks.hold(KEY):
        pass
