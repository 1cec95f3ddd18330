"""The lease source with real PostgreSQL: several books, idle returns, limit changes,
crashed holders, reclaimed leases, and failing closed while the database is down."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from aegis.sidecar.budgets import (
    BudgetBook,
    Exceeded,
    LeaseBudgetSource,
    LeaseSettings,
    Reservation,
)
from aegis.sidecar.contract import BudgetSpec
from aegis.sidecar.ledger.spool import Spool
from aegis.sidecar.ledger.store import LedgerStore
from aegis.sidecar.routing.ports import BUDGET_UNAVAILABLE
from aegis.sidecar.runtime.wiring import open_budgets
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.ledger_helpers import budget, record
from tests.sidecar.shared_helpers import fetch, money, poll_until
from tests.sidecar.tenancy import provision, set_budgets

pytestmark = pytest.mark.postgres

D = Decimal
FAST = LeaseSettings(tick=0.01, retry_interval=0.1, statement_timeout=1.0, start_timeout=2.0)
Member = tuple[BudgetBook, LeaseBudgetSource, LedgerStore]


@pytest.fixture
async def sidecar(pg_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Member]]]:
    """``await sidecar(holder, limit, settings)``: a book + lease source + store (the
    limit is written as the operator writes it; every member shares it)."""
    await provision(pg_url, "ns")
    opened: list[Member] = []

    async def make(
        holder: str, limit: str = "10", settings: LeaseSettings = FAST, spend_id: int = 0
    ) -> Member:
        await set_budgets(pg_url, "ns", [("dash", "dashscope", limit)])
        store = LedgerStore(pg_url, spool=Spool(tmp_path / holder), holder=f"ns/{holder}")
        await store.start()
        book, source = await open_budgets(
            [budget("dash", "dashscope", limit)], store, settings=settings
        )
        assert source is not None
        opened.append((book, source, store))
        return book, source, store

    yield make
    for _, source, store in opened:
        with contextlib.suppress(Exception):
            await source.aclose()
        await store.aclose()


async def spend(member: Member, amount: Decimal, actual: Decimal, rid: str) -> bool:
    book, _, store = member
    outcome = await book.acquire("dashscope", amount)
    if not isinstance(outcome, Reservation):
        return False
    charged = book.settle(outcome, actual)
    store.append(record(0, request_id=rid, cost_usd=charged, period=outcome.period))
    return True


async def test_several_books_share_one_limit_exactly(
    sidecar: Callable[..., Awaitable[Member]], pg_url: str
) -> None:
    members = [await sidecar(f"pod-{i}", "2") for i in range(4)]
    rng = random.Random(4)

    async def client(member: Member, name: str) -> None:
        for n in range(400):
            worst = D(rng.randint(1000, 20000)) / 1_000_000
            await spend(member, worst, worst * rng.randint(50, 100) / 100, f"{name}-{n}")
            await asyncio.sleep(0)

    await asyncio.gather(*(client(m, f"{i}-{j}") for i, m in enumerate(members) for j in range(5)))
    for _, source, store in members:
        await source.aclose()
        await store.flush()
    spent = await money(pg_url, "SELECT sum(cost_usd) FROM aegis.ledger_entries")
    [(committed, overdraft)] = await fetch(
        pg_url, "SELECT committed_usd, overdraft_usd FROM aegis.budget_periods"
    )
    assert spent <= D(2)
    assert spent > D("1.9")  # little is stranded: slices shrink as the budget runs out
    assert committed == spent and overdraft == 0


async def test_idle_money_goes_back_and_a_lower_limit_is_handed_back(
    sidecar: Callable[..., Awaitable[Member]], pg_url: str
) -> None:
    settings = LeaseSettings(tick=0.01, idle_return=0.3, min_slice_share=D("0.2"))
    member = await sidecar("pod-idle", "10", settings)
    book, source, _ = member
    assert await spend(member, D("0.5"), D("0.5"), "r1")
    committed = await money(pg_url, "SELECT committed_usd FROM aegis.budget_periods")
    assert committed >= D(2)  # a slice of 20 % of the limit
    await asyncio.sleep(0.8)
    assert await money(pg_url, "SELECT committed_usd FROM aegis.budget_periods") == D("0.5")
    assert await spend(member, D("1"), D("1"), "r2")  # takes a fresh slice
    assert await money(pg_url, "SELECT committed_usd FROM aegis.budget_periods") >= D(3)
    # Lowered by the operator (the ledger's limit) and in the config: hand back the rest.
    await set_budgets(pg_url, "ns", [("dash", "dashscope", "1.6")])
    book.reconfigure([budget("dash", "dashscope", "1.6")])
    await asyncio.sleep(0.2)
    # What is spent stays; at most the 0.1 the lower limit still allows is held.
    assert (
        D("1.5")
        <= await money(pg_url, "SELECT committed_usd FROM aegis.budget_periods")
        <= D("1.6")
    )
    assert isinstance(await book.acquire("dashscope", D("0.2")), Exceeded)
    assert source.statements["return"] >= 2


async def test_a_crashed_holders_lease_is_reclaimed_after_its_ttl(
    sidecar: Callable[..., Awaitable[Member]], pg_url: str
) -> None:
    settings = LeaseSettings(tick=0.01, ttl_seconds=1, min_slice_share=D("0.5"))
    crashed = await sidecar("pod-crash", "4", settings)
    assert await spend(crashed, D(1), D("0.75"), "c1")
    await crashed[2].flush()
    assert crashed[1]._task is not None
    crashed[1]._task.cancel()  # the process is gone: no renewals, no return
    survivor = await sidecar("pod-live", "4", settings)
    assert not await spend(survivor, D("3.5"), D("3.5"), "s0")  # held by the crashed one
    await asyncio.sleep(1.2)  # its TTL runs out
    assert await spend(survivor, D("3.2"), D("3.2"), "s1")
    lease = await fetch(
        pg_url,
        "SELECT amount_usd, state, epoch FROM aegis.budget_leases WHERE holder = 'ns/pod-crash'",
    )
    assert lease == [(D("0.75"), "closed", 1)]  # what it settled stays spent


async def test_a_stalled_holder_notices_its_lease_was_reclaimed(
    sidecar: Callable[..., Awaitable[Member]], pg_url: str
) -> None:
    settings = LeaseSettings(tick=0.01, ttl_seconds=1, min_slice_share=D("0.5"))
    stalled = await sidecar("pod-stall", "4", settings)
    book, source, _ = stalled
    assert await spend(stalled, D("0.5"), D("0.5"), "a1")
    task = source._task
    assert task is not None
    task.cancel()  # stalled: no renewals for longer than the TTL
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(1.2)
    # Not renewed for 3/4 of its TTL: it admits nothing more, even with money left.
    stale = await book.acquire("dashscope", D("0.01"))
    assert isinstance(stale, Exceeded) and stale.reason == BUDGET_UNAVAILABLE
    other = await sidecar("pod-other", "4", settings)
    assert await spend(other, D("0.1"), D("0.1"), "b1")  # reclaims the stalled lease
    source._task = asyncio.create_task(source._run())  # it wakes up again
    await asyncio.sleep(0.3)
    assert await spend(stalled, D("0.01"), D("0.01"), "a2")  # renewed: admitted again
    await stalled[2].flush()
    view = book.account_view("dash", book.period("dashscope"))
    assert view is not None
    # The local slice was dropped to what it had committed (0.5, which the reclaim
    # kept as spent), then topped up anew: local and database agree again.
    [(amount, settled)] = await fetch(
        pg_url,
        "SELECT amount_usd, settled_usd FROM aegis.budget_leases WHERE holder = 'ns/pod-stall'",
    )
    assert (amount, settled) == (view[0], view[1]) == (amount, D("0.51"))


async def test_the_book_fails_closed_while_the_database_is_down(
    sidecar: Callable[..., Awaitable[Member]], postgres: PostgresServer
) -> None:
    member = await sidecar("pod-down", "10")
    book, source, _ = member
    assert await spend(member, D("0.1"), D("0.1"), "d1")
    await asyncio.to_thread(postgres.stop)
    try:
        async with asyncio.timeout(10):
            while book.blocked is None:
                await spend(member, D("0.1"), D("0.1"), f"d-{random.random()}")
                await asyncio.sleep(0.05)
        outcome = await book.acquire("dashscope", D("0.1"))
        assert isinstance(outcome, Exceeded) and outcome.reason == BUDGET_UNAVAILABLE
        verdict = book.can_cover("dashscope", D("0.1"))
        assert (verdict.ok, verdict.reason) == (False, BUDGET_UNAVAILABLE)
        assert not source.available
    finally:
        await asyncio.to_thread(postgres.start)
    await poll_until(lambda: book.blocked is None, within=15)
    assert await spend(member, D("0.1"), D("0.1"), "d2")


def test_settings_from_the_environment() -> None:
    settings = LeaseSettings.from_env({"AEGIS_LEASE_TTL_SECONDS": "5", "AEGIS_LEASE_HORIZON": "2"})
    assert (settings.ttl_seconds, settings.horizon) == (5, 2.0)
    assert settings.min_slice_share == LeaseSettings().min_slice_share
    assert isinstance(BudgetSpec, type)
