"""Lease statements whose answer is lost: the database applied (or never saw) a take
or a give-back, and the sidecar's statement timed out. Between the lease source and
PostgreSQL sits a TCP relay (written here) that can hold back the server's answers
or the client's requests; the invariants are read from the database:
lease amount - settled = what the sidecar can still spend, committed ≤ limit,
no overdraft, and nothing stranded once the leases are closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from aegis.sidecar.budgets import BudgetBook, LeaseBudgetSource, LeaseSettings, Reservation
from aegis.sidecar.budgets.lease_reconcile import Adjustment, LocalView, reconcile
from aegis.sidecar.ledger.database import open_database
from aegis.sidecar.ledger.spool import Spool
from aegis.sidecar.ledger.store import LedgerStore
from tests.sidecar.ledger_helpers import budget, record
from tests.sidecar.shared_helpers import fetch, money, poll_until
from tests.sidecar.tenancy import provision, set_budgets

pytestmark = pytest.mark.postgres

D = Decimal
LIMIT = D(10)
SETTINGS = LeaseSettings(
    tick=0.01,
    retry_interval=0.1,
    statement_timeout=0.5,
    start_timeout=5.0,
    ttl_seconds=6,  # renewed every 2 s
    min_slice_share=D("0.2"),  # slices of 2
    idle_return=600.0,
)


EXECUTE = b"E\x00\x00\x00\x09\x00"  # wire protocol: Execute, unnamed portal


@dataclass(eq=False)
class _Pipe:
    """One client connection through the relay: both sockets and what was held back."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    held: list[bytes] = field(default_factory=list)
    armed: bool = False  # the statement to lose is being sent on this connection
    holding_answers: bool = False

    def abort(self) -> None:
        for writer in (self.client, self.server):
            writer.transport.abort()


class Relay:
    """A TCP relay to PostgreSQL that, on request, loses one statement: the first
    request naming ``marker`` (e.g. ``b"aegis.lease_take"``) either goes through and
    every answer after it is held back (``answers=True``: the statement runs and
    commits, the client never hears), or is itself held back (the statement never
    reaches the server). :meth:`cut` then drops the held bytes and those
    connections, as a network that lost them would."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.marker: bytes | None = None
        self.answers = True
        self.pipes: set[_Pipe] = set()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        pipe = _Pipe(writer, up_writer)
        self.pipes.add(pipe)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, pipe, answers=False),
                self._pump(up_reader, writer, pipe, answers=True),
            )
        finally:
            self.pipes.discard(pipe)
            pipe.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pipe: _Pipe,
        *,
        answers: bool,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if not answers and self.marker is not None and self.marker in chunk:
                    self.marker = None  # this statement is the one to lose
                    pipe.armed = True
                    if not self.answers:
                        pipe.held.append(chunk)
                if not answers and pipe.armed and EXECUTE in chunk:
                    # Its Execute message goes through (after asyncpg's Parse/Describe
                    # round trip); every answer from here on is held back.
                    pipe.holding_answers = True
                if pipe.held or (answers and pipe.holding_answers):
                    pipe.held.append(chunk)  # never delivered: cut() drops it
                    continue
                writer.write(chunk)
                await writer.drain()
        pipe.abort()

    def holding(self) -> bool:
        return any(pipe.held for pipe in self.pipes)

    def cut(self) -> None:
        """Stop holding; drop the held bytes with their connections."""
        self.marker = None
        for pipe in [p for p in self.pipes if p.held]:
            self.pipes.discard(pipe)
            pipe.abort()

    async def aclose(self) -> None:
        self.cut()
        for pipe in list(self.pipes):
            pipe.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class Member:
    """A sidecar's budget side: its book, a lease source reaching PostgreSQL through
    the relay, and its ledger store (direct)."""

    book: BudgetBook
    source: LeaseBudgetSource
    store: LedgerStore
    relay: Relay
    serial: int = 0

    def account(self) -> tuple[Decimal, Decimal, Decimal]:
        view = self.book.account_view("Namespace/ns/dash", self.book.period("dashscope"))
        assert view is not None
        held, settled, reserved = view
        return held, settled, reserved

    async def spend(self, amount: str) -> bool:
        outcome = await self.book.acquire("dashscope", D(amount))
        if not isinstance(outcome, Reservation):
            return False
        charged = self.book.settle(outcome, D(amount))
        self.serial += 1
        rid = f"{self.store.holder}-{self.serial}"
        self.store.append(record(0, request_id=rid, cost_usd=charged, period=outcome.period))
        return True


@pytest.fixture
async def member(pg_url: str, tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[Member]]]:
    await provision(pg_url, "ns")
    await set_budgets(pg_url, "ns", [("dash", "dashscope", str(LIMIT))])
    opened: list[Member] = []
    url = make_url(pg_url)

    async def make(pod: str) -> Member:
        relay = Relay(url.host or "127.0.0.1", url.port or 5432)
        await relay.start()
        store = LedgerStore(pg_url, spool=Spool(tmp_path / pod), holder=f"ns/{pod}")
        await store.start()
        through = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        source = LeaseBudgetSource(
            open_database(through), store.holder, settings=SETTINGS, replayed=store.replayed
        )
        book = BudgetBook(
            [budget("dash", "dashscope", str(LIMIT))], source, namespace=source.namespace
        )
        store.charge_to = lambda r: book.charged_budgets(r.provider)
        store.on_health = source.ledger_health
        await source.start(book)
        opened.append(Member(book, source, store, relay))
        return opened[-1]

    yield make
    for m in opened:
        m.relay.cut()
        with contextlib.suppress(Exception):
            await m.source.aclose()
        await m.store.aclose()
        await m.source.database.aclose()
        await m.relay.aclose()


async def lease(url: str, holder: str) -> tuple[Decimal, Decimal]:
    """(amount, settled) of ``holder``'s lease."""
    rows = await fetch(
        url, f"SELECT amount_usd, settled_usd FROM aegis.budget_leases WHERE holder = '{holder}'"
    )
    return (D(rows[0][0]), D(rows[0][1])) if rows else (D(0), D(0))


async def lose_one(m: Member, function: str, *, answers: bool, action: Awaitable[object]) -> object:
    """Run ``action``; the relay loses the next call of ``function`` (its answer, or
    the call itself) until the lease source's statement has timed out, then cuts
    that connection."""
    failures = m.source.failures
    m.relay.marker = function.encode()
    m.relay.answers = answers
    task = asyncio.ensure_future(action)
    await poll_until(lambda: m.source.failures > failures, within=20)
    m.relay.cut()
    return await task


async def in_step(m: Member, pg_url: str) -> bool:
    """The database's lease minus what it settled is what the book holds unspent
    (nothing reserved, every settled row written)."""
    await m.store.flush()
    amount, settled = await lease(pg_url, m.store.holder)
    held, book_settled, reserved = m.account()
    return reserved == 0 and amount - settled == held - book_settled


async def closed_exactly(m: Member, pg_url: str, limit: Decimal = LIMIT) -> None:
    """Close the leases: nothing stranded, nothing overdrawn, within the limit."""
    await m.source.aclose()
    await m.store.flush()
    spent = await money(pg_url, "SELECT sum(cost_usd) FROM aegis.ledger_entries")
    [(committed, overdraft)] = await fetch(
        pg_url, "SELECT committed_usd, overdraft_usd FROM aegis.budget_periods"
    )
    amount, settled = await lease(pg_url, m.store.holder)
    assert overdraft == 0
    assert committed <= limit
    assert (amount, settled) == (spent, spent)
    assert committed == spent


async def test_a_take_whose_answer_was_lost_is_adopted(
    member: Callable[[str], Awaitable[Member]], pg_url: str
) -> None:
    m = await member("pod-take")
    holder = m.store.holder
    # The first request of the month waits for a slice; the database grants it, the
    # answer never arrives, the sidecar's statement times out.
    await lose_one(
        m, "aegis.lease_take", answers=True, action=m.book.acquire("dashscope", D("0.5"))
    )
    granted, _ = await lease(pg_url, holder)
    assert granted > 0  # the database applied the take; the book never heard of it
    # Once the database answers again, the next answer for this lease says what it
    # holds: the lost slice is adopted, nothing stays stranded.
    await poll_until(lambda: in_step(m, pg_url), within=15)
    assert m.account()[0] >= granted
    # The whole limit can be spent, and exactly that is committed.
    while await m.spend("0.5"):
        pass
    await m.store.flush()
    assert await money(pg_url, "SELECT sum(cost_usd) FROM aegis.ledger_entries") == LIMIT
    assert await in_step(m, pg_url)
    await closed_exactly(m, pg_url)


async def test_a_give_back_whose_answer_was_lost_neither_overspends_nor_repeats(
    member: Callable[[str], Awaitable[Member]], pg_url: str
) -> None:
    m = await member("pod-return")
    holder = m.store.holder
    assert await m.spend("0.5")
    await m.store.flush()
    held, _, _ = m.account()
    assert held > D("0.5")
    # The limit is lowered: the book hands back what it does not need; the database
    # applies the return and its answer is lost.
    lower = [budget("dash", "dashscope", "4")]
    await set_budgets(pg_url, "ns", [("dash", "dashscope", "4")])

    async def lower_limit() -> None:
        m.book.reconfigure(lower)

    await lose_one(m, "aegis.lease_return", answers=True, action=lower_limit())
    # The database applied it (the book may have taken a new slice since).
    assert (await lease(pg_url, holder))[0] != held
    # The book does not believe it holds what went back, nor returns it again.
    await poll_until(lambda: in_step(m, pg_url), within=15)
    # It goes on spending within the lower limit, up to exactly that limit.
    while await m.spend("0.5"):
        pass
    await m.store.flush()
    assert await money(pg_url, "SELECT sum(cost_usd) FROM aegis.ledger_entries") == D(4)
    assert await in_step(m, pg_url)
    await closed_exactly(m, pg_url, D(4))


async def test_a_give_back_that_never_arrived_is_adopted_again(
    member: Callable[[str], Awaitable[Member]], pg_url: str
) -> None:
    m = await member("pod-unsent")
    holder = m.store.holder
    assert await m.spend("0.5")
    await m.store.flush()
    lower = [budget("dash", "dashscope", "4")]
    await set_budgets(pg_url, "ns", [("dash", "dashscope", "4")])

    async def lower_limit() -> None:
        m.book.reconfigure(lower)

    # This time the request is lost: the database still holds the slice of 2 ...
    await lose_one(m, "aegis.lease_return", answers=False, action=lower_limit())
    assert (await lease(pg_url, holder))[0] > D("0.5")
    # ... and the book adopts it back at the next answer instead of stranding it.
    await poll_until(lambda: in_step(m, pg_url), within=15)
    while await m.spend("0.5"):
        pass
    await m.store.flush()
    assert await money(pg_url, "SELECT sum(cost_usd) FROM aegis.ledger_entries") == D(4)
    await closed_exactly(m, pg_url, D(4))


async def test_a_take_lost_while_closing_is_given_back(
    member: Callable[[str], Awaitable[Member]], pg_url: str
) -> None:
    m = await member("pod-close")
    holder = m.store.holder
    m.relay.marker = b"aegis.lease_take"
    waiting = asyncio.ensure_future(m.book.acquire("dashscope", D("0.5")))

    async def granted() -> bool:
        return (await lease(pg_url, holder))[0] > 0

    await poll_until(granted, within=20)  # applied; its answer is held back
    # The sidecar shuts down while that take's answer is still missing: the lease
    # must end at what was settled (nothing), not keep the slice.
    await m.source.aclose()  # gives up on the take (its connection stays held)
    m.relay.cut()
    assert not isinstance(await waiting, Reservation)
    assert await lease(pg_url, holder) == (D(0), D(0))
    [(committed, overdraft)] = await fetch(
        pg_url, "SELECT committed_usd, overdraft_usd FROM aegis.budget_periods"
    )
    assert (committed, overdraft) == (0, 0)


# -- the decision alone: local view + the database's answer -> adjustment ------------


@pytest.mark.parametrize(
    ("local", "lease_amount", "lease_settled", "expected"),
    [
        # In step: nothing to do.
        (LocalView(D(1), D(0), D(2), D("0.5"), D("1.5")), D(3), D("1.5"), Adjustment(D(1))),
        # First answer after a lost take: base is what the lease settled (a takeover
        # left it at that); the lost slice of 2 is adopted beside the booked 2.
        (LocalView(None, D(0), D(2), D(0), D(2)), D(5), D(1), Adjustment(D(1), adopt=D(2))),
        # A return counted as applied that was not: adopted back.
        (
            LocalView(D(0), D(0), D("0.5"), D("0.5"), D(0)),
            D(2),
            D("0.5"),
            Adjustment(D(0), D("1.5")),
        ),
        # An overdraft (the database raised the lease to what it settled): not spendable.
        (LocalView(D(0), D(0), D(2), D(3), D(0)), D(3), D(3), Adjustment(D(0), adopt=D(1))),
        (LocalView(D(0), D(0), D(2), D(2), D(0)), D(3), D(3), Adjustment(D(0))),
        # The database holds less than the book: drop it locally, never committed money.
        (LocalView(D(0), D(0), D(4), D(1), D(2)), D(1), D(1), Adjustment(D(0), drop=D(2))),
        # A closed lease that still holds a lost slice: give it back, never settled money.
        (LocalView(D(1), D(0)), D(4), D(1), Adjustment(D(1), give_back=D(3))),
        (LocalView(D(1), D(0)), D(4), D(3), Adjustment(D(1), give_back=D(1))),
        # A return still under way is not taken for money held.
        (LocalView(D(0), D(2), D(1), D(0), D(1)), D(3), D(0), Adjustment(D(0))),
    ],
)
def test_reconcile_decides_from_the_lease_the_database_reports(
    local: LocalView, lease_amount: Decimal, lease_settled: Decimal, expected: Adjustment
) -> None:
    assert reconcile(local, lease_amount, lease_settled) == expected
