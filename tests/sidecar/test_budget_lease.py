"""The lease source with real PostgreSQL: several books, idle returns, limit changes,
crashed holders, reclaimed leases, and failing closed while the database is down."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from asyncio.subprocess import Process
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
from aegis.sidecar.routing.ports import BUDGET_EXCEEDED, BUDGET_UNAVAILABLE
from aegis.sidecar.runtime.wiring import open_budgets
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.ledger_helpers import budget, record
from tests.sidecar.shared_helpers import fetch, money, poll_until
from tests.sidecar.tenancy import provision, set_budgets

ROOT = Path(__file__).resolve().parents[2]

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
            await asyncio.sleep(0)  # deliberate pacing: let the other clients interleave

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


async def test_a_burst_bigger_than_two_slices_waits_for_its_top_ups(
    sidecar: Callable[..., Awaitable[Member]],
) -> None:
    """64 requests of $1 at once against $100: a slice is a quarter of the limit at
    most, so the burst needs three top-ups. Its requests wait for them, however many
    it takes, and none is refused while the money is there (the book once gave up
    after two: 14 of them were refused as over budget with $50 left)."""
    book, _, _ = await sidecar("pod-0", "100", LeaseSettings(tick=0.01))
    outcomes = await asyncio.gather(*(book.acquire("dashscope", D(1)) for _ in range(64)))
    refused = [o for o in outcomes if not isinstance(o, Reservation)]
    assert refused == []
    # Past the limit the answer is still "exceeded" (not a wait that times out).
    more = await asyncio.gather(*(book.acquire("dashscope", D(1)) for _ in range(40)))
    refused = [o for o in more if not isinstance(o, Reservation)]
    assert len(refused) == 4
    assert all(isinstance(o, Exceeded) and o.reason == BUDGET_EXCEEDED for o in refused)


async def test_idle_money_goes_back_and_a_lower_limit_is_handed_back(
    sidecar: Callable[..., Awaitable[Member]], pg_url: str
) -> None:
    settings = LeaseSettings(tick=0.01, idle_return=0.3, min_slice_share=D("0.2"))
    member = await sidecar("pod-idle", "10", settings)
    book, source, _ = member
    assert await spend(member, D("0.5"), D("0.5"), "r1")
    committed = await money(pg_url, "SELECT committed_usd FROM aegis.budget_periods")
    assert committed >= D(2)  # a slice of 20 % of the limit
    # Idle for idle_return: everything unspent goes back, the spent 0.5 stays.
    await poll_until(lambda: committed_is(pg_url, D("0.5")), within=10)
    assert await spend(member, D("1"), D("1"), "r2")  # takes a fresh slice
    assert await money(pg_url, "SELECT committed_usd FROM aegis.budget_periods") >= D(3)
    # Lowered by the operator (the ledger's limit) and in the config: hand back the rest.
    await set_budgets(pg_url, "ns", [("dash", "dashscope", "1.6")])
    book.reconfigure([budget("dash", "dashscope", "1.6")])
    await poll_until(lambda: committed_at_most(pg_url, D("1.6")), within=10)
    # What is spent stays; at most the 0.1 the lower limit still allows is held.
    assert (
        D("1.5")
        <= await money(pg_url, "SELECT committed_usd FROM aegis.budget_periods")
        <= D("1.6")
    )
    assert isinstance(await book.acquire("dashscope", D("0.2")), Exceeded)
    assert source.statements["return"] >= 2


async def test_a_crashed_holders_lease_is_reclaimed_after_its_ttl(
    sidecar: Callable[..., Awaitable[Member]], pg_url: str, tmp_path: Path
) -> None:
    await provision(pg_url, "ns")
    await set_budgets(pg_url, "ns", [("dash", "dashscope", "4")])
    # A holder process takes a slice of 2, settles 0.75 of it and then idles: with
    # each renewal (every second at a TTL of 3) it reports what it may still commit,
    # which falls towards nothing as its spend rate decays. Then it is SIGKILLed.
    crashed = await start_holder(pg_url, tmp_path / "pod-crash", "ns/pod-crash", ttl=3)
    try:
        await poll_until(
            lambda: exposure_of(pg_url, "ns/pod-crash", below=D(1)), within=30, every=0.1
        )
        crashed.send_signal(signal.SIGKILL)
    finally:
        await crashed.wait()
    assert crashed.returncode == -signal.SIGKILL
    exposure = await money(
        pg_url, "SELECT exposure_usd FROM aegis.budget_leases WHERE holder = 'ns/pod-crash'"
    )
    assert D("0.75") <= exposure < 1
    settings = LeaseSettings(tick=0.01, ttl_seconds=1, min_slice_share=D("0.5"))
    survivor = await sidecar("pod-live", "4", settings)
    assert (await lease_of(pg_url, "ns/pod-crash"))[1] == "open"
    denied = not await spend(survivor, D("3"), D("3"), "s0")
    if (await lease_of(pg_url, "ns/pod-crash"))[1] == "open":  # not reclaimed (yet):
        assert denied  # its slice of 2 is still held, 3 cannot be had
    # Once its TTL has run out, the next take reclaims it (polled: when depends on load).
    await poll_until(lambda: spend(survivor, D(3), D(3), "s1"), within=20, every=0.1)
    # What it settled and what it may have had in flight (its exposure) stay charged.
    assert await lease_of(pg_url, "ns/pod-crash") == (exposure, "closed", 1)


async def exposure_of(url: str, holder: str, *, below: Decimal) -> bool:
    sql = f"SELECT exposure_usd FROM aegis.budget_leases WHERE holder = '{holder}'"
    return await money(url, sql) < below


async def start_holder(
    url: str, spool: Path, holder: str, *, ttl: int, spend: str = "1", settle: str = "0.75"
) -> Process:
    """A lease holder in its own process (tests/sidecar/lease_holder.py) once it has
    taken its slice and settled a request."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.sidecar.lease_holder",
        *(url, str(spool), holder, "4", str(ttl), spend, settle),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        line = await process.stdout.readline()
    if line.strip() != b"ready":
        process.kill()
        await process.wait()
        raise AssertionError(f"the holder did not start: {line!r}")
    return process


async def lease_of(url: str, holder: str) -> tuple[Decimal, str, int]:
    [(amount, state, epoch)] = await fetch(
        url,
        f"SELECT amount_usd, state, epoch FROM aegis.budget_leases WHERE holder = '{holder}'",
    )
    return amount, state, epoch


async def committed_is(url: str, amount: Decimal) -> bool:
    return await money(url, "SELECT committed_usd FROM aegis.budget_periods") == amount


async def committed_at_most(url: str, amount: Decimal) -> bool:
    return await money(url, "SELECT committed_usd FROM aegis.budget_periods") <= amount


async def test_a_starved_holder_admits_nothing_past_three_quarters_of_its_ttl(
    sidecar: Callable[..., Awaitable[Member]],
) -> None:
    settings = LeaseSettings(tick=0.01, ttl_seconds=1, min_slice_share=D("0.5"))
    book, source, store = await sidecar("pod-starved", "4", settings)
    assert await spend((book, source, store), D("0.5"), D("0.5"), "a1")
    # Deliberate stall (not a wait for an outcome): the event loop gets no CPU for
    # longer than 3/4 of the TTL, as in a paused or starved process. Nothing runs
    # between its end and the reservation below, so no renewal can come first.
    time.sleep(0.8)  # noqa: ASYNC251  deliberate stall: the point of this test
    stale = await book.acquire("dashscope", D("0.01"))
    assert isinstance(stale, Exceeded) and stale.reason == BUDGET_UNAVAILABLE
    # Renewed on the next tick: admitted again.
    await poll_until(lambda: spend((book, source, store), D("0.01"), D("0.01"), "a2"))


async def test_a_stopped_holder_notices_its_lease_was_reclaimed(
    sidecar: Callable[..., Awaitable[Member]], pg_url: str, tmp_path: Path
) -> None:
    await provision(pg_url, "ns")
    await set_budgets(pg_url, "ns", [("dash", "dashscope", "4")])
    # A holder process with a slice of 2 that has settled 0.5, then SIGSTOPped.
    stalled = await start_holder(
        pg_url, tmp_path / "pod-stall", "ns/pod-stall", ttl=1, spend="0.5", settle="0.5"
    )
    try:
        stalled.send_signal(signal.SIGSTOP)
        settings = LeaseSettings(tick=0.01, ttl_seconds=1, min_slice_share=D("0.5"))
        other = await sidecar("pod-other", "4", settings)
        # It cannot renew: once its TTL has run out the other reclaims it.
        await poll_until(lambda: spend(other, D("0.1"), D("0.1"), "b1"), every=0.1)
        await poll_until(lambda: lease_is(pg_url, "ns/pod-stall", "closed"))
        stalled.send_signal(signal.SIGCONT)
        # Awake, it renews, sees the new epoch and drops its slice to what it had
        # committed (0.5, which the reclaim kept as spent); then it is topped up anew.
        await poll_until(lambda: admitted(stalled, "spend 0.01 0.01 a2"), every=0.1)
        held, settled = (await ask(stalled, "view")).split()
        [(amount, settled_db)] = await fetch(
            pg_url,
            "SELECT amount_usd, settled_usd FROM aegis.budget_leases WHERE holder = 'ns/pod-stall'",
        )
        # Local and database agree again.
        assert (amount, settled_db) == (D(held), D(settled)) == (amount, D("0.51"))
    finally:
        stalled.send_signal(signal.SIGKILL)
        await stalled.wait()


async def ask(process: Process, command: str) -> str:
    """One command to a holder process, its one-line answer."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(command.encode() + b"\n")
    await process.stdin.drain()
    async with asyncio.timeout(30):
        return (await process.stdout.readline()).decode().strip()


async def admitted(process: Process, command: str) -> bool:
    return await ask(process, command) == "admitted"


async def lease_is(url: str, holder: str, state: str) -> bool:
    return (await lease_of(url, holder))[1] == state


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
                await asyncio.sleep(0.05)  # poll until blocked; the deadline is the timeout
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
