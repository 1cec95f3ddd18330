"""Property: the tenants' lease functions keep the money right under racing connections.

Hypothesis draws rounds of operations; in each round every holder does at most one
thing (take, renew, return, write ledger rows within its lease or beyond it, replay
its last batch, take over its previous life, or let its TTL run out) and all of them
run at once, each on its own connection to a real PostgreSQL. Whatever order the
database serialised them in, after every round:

- ``committed = Σ lease amounts`` (open leases hold money, closed ones their settled spend);
- ``committed ≤ limit + overdraft``, and every lease has ``settled ≤ amount``;
- ``Σ settled = Σ cost`` of the ledger rows, and every row is there exactly once
  (a replayed batch adds nothing);
- ``overdraft = 0`` while every write stayed within its holder's unexpired lease.

The expected values come from the rows the test wrote, never from the functions.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis.sidecar.contract import BudgetKey
from aegis.sidecar.ledger import leases
from aegis.sidecar.ledger.database import Connection, PostgresDatabase
from aegis.sidecar.ledger.models import LedgerRecord
from aegis.sidecar.ledger.urls import parse_url
from tests.sidecar.ledger_helpers import record
from tests.sidecar.shared_helpers import poll_until, write_rows
from tests.sidecar.tenancy import key, provision, set_budgets

pytestmark = pytest.mark.postgres

D = Decimal
P = "2026-11"
HOLDERS = 4
MICRO = D("0.000001")
# Leases last TTL seconds; one that ends within MARGIN of a round's start may be
# reclaimed during it (by time, not only by an "expire"). Short, so that the server
# is soon older than a TTL: before that, nothing is reclaimed (the restart grace).
TTL, MARGIN = 5, 4
ZERO = D(0)

money = st.integers(min_value=0, max_value=5000).map(lambda m: D(m) / 1000)
share = st.integers(min_value=1, max_value=100).map(lambda p: D(p) / 100)
# Takes, writes, returns and expiries weigh more: they move money (a reclaim needs a
# take, a write and an expiry in a row).
PARAMETERS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "idle": st.just(()),
    "take": st.tuples(money, money.map(lambda m: m / 4)),
    "renew": st.just(()),
    "return": st.tuples(money, st.booleans()),
    "write": st.tuples(share, st.integers(min_value=1, max_value=3)),
    "overspend": st.tuples(share),
    "replay": st.just(()),
    "takeover": st.just(()),
    "expire": st.just(()),
}
WEIGHTS = {"take": 3, "write": 3, "expire": 2, "return": 2}
operation = st.sampled_from(
    [kind for kind in PARAMETERS for _ in range(WEIGHTS.get(kind, 1))]
).flatmap(lambda kind: PARAMETERS[kind].map(lambda args: (kind, *args)))
rounds = st.lists(st.lists(operation, min_size=HOLDERS, max_size=HOLDERS), min_size=1, max_size=8)
limits = st.integers(min_value=1, max_value=20).map(D)


@dataclass
class Lease:
    amount: Decimal = ZERO
    settled: Decimal = ZERO
    state: str = "none"
    expired: bool = False

    @property
    def unused(self) -> Decimal:
        return self.amount - self.settled if self.state == "open" else D(0)


@dataclass
class Example:
    """One drawn example: its own budget and holders in the shared test database."""

    budget: BudgetKey
    holders: list[str]
    limit: Decimal
    ids: Iterator[int] = field(default_factory=itertools.count)
    written: dict[str, Decimal] = field(default_factory=dict)  # request id -> cost
    last_batch: dict[str, list[LedgerRecord]] = field(default_factory=dict)
    unsafe: bool = False  # a write went beyond what its holder's lease surely covered

    def rows(self, holder: str, total: Decimal, count: int) -> list[LedgerRecord]:
        each = (total / count).quantize(MICRO, ROUND_DOWN)
        batch = [
            record(
                0,
                request_id=f"{self.budget.name}-{next(self.ids)}",
                cost_usd=each,
                period=P,
            )
            for _ in range(count)
        ]
        self.last_batch[holder] = batch
        return batch


async def leases_of(conn: Connection, example: Example) -> dict[str, Lease]:
    result = await conn.fetch(
        "SELECT holder, amount_usd, settled_usd, state, "
        "expires_at < now() + make_interval(secs => $3) "
        "FROM aegis.budget_leases WHERE budget_name = $1 AND period = $2",
        example.budget.name,
        P,
        MARGIN,
    )
    found = {h: Lease(a, s, st_, bool(x)) for h, a, s, st_, x in result}
    return {h: found.get(h, Lease()) for h in example.holders}


async def perform(
    database: PostgresDatabase, example: Example, holder: str, op: tuple[Any, ...], lease: Lease
) -> None:
    """One holder's operation on a connection of its own."""
    kind, budget = op[0], example.budget
    async with database.connect() as conn:
        if kind == "take":
            await leases.take(
                conn,
                budget=budget,
                period=P,
                holder=holder,
                want=op[1],
                need=op[2],
                ttl_seconds=TTL,
            )
        elif kind == "renew":
            await leases.take(
                conn, budget=budget, period=P, holder=holder, want=ZERO, ttl_seconds=TTL
            )
        elif kind == "return":
            await leases.give_back(
                conn, budget=budget, period=P, holder=holder, amount=op[1], close=op[2]
            )
        elif kind in {"write", "overspend"}:
            if kind == "write":
                total, count = lease.unused * op[1], op[2]
                example.unsafe |= lease.expired  # another take may reclaim it meanwhile
            else:
                total, count = lease.unused + op[1], 1
                example.unsafe = True
            batch = example.rows(holder, total, count)
            if await write_rows(conn, holder, batch, [budget.encoded] * count):
                example.written.update((r.request_id, r.cost_usd) for r in batch)
        elif kind == "replay" and holder in example.last_batch:
            batch = example.last_batch[holder]
            assert await write_rows(conn, holder, batch, [budget.encoded] * len(batch)) == 0
        elif kind == "takeover":
            await leases.takeover(conn, holder)
        elif kind == "expire":  # the clock moves past its TTL (test-side time, not code)
            await conn.execute(
                "UPDATE aegis.budget_leases SET expires_at = now() - interval '1 second' "
                "WHERE holder = $1",
                holder,
            )


async def check(conn: Connection, example: Example) -> None:
    period = await conn.fetchrow(
        "SELECT committed_usd, overdraft_usd, limit_usd FROM aegis.budget_periods "
        "WHERE budget_name = $1 AND period = $2",
        example.budget.name,
        P,
    )
    held = await leases_of(conn, example)
    committed, overdraft, limit = period or (D(0), D(0), example.limit)
    assert committed == sum((lease.amount for lease in held.values()), D(0)), (period, held)
    assert committed <= limit + overdraft, (period, held)
    assert all(D(0) <= lease.settled <= lease.amount for lease in held.values()), held
    if not example.unsafe:
        assert overdraft == 0, (period, held)
    rows: dict[str, Decimal] = {
        request_id: cost
        for request_id, cost in await conn.fetch(
            "SELECT request_id, cost_usd FROM aegis.ledger_entries WHERE request_id LIKE $1",
            f"{example.budget.name}-%",
        )
    }
    assert rows == example.written  # each row once, at its cost
    settled = sum((lease.settled for lease in held.values()), D(0))
    assert settled == sum(example.written.values(), D(0)), (held, example.written)


async def run(
    database: PostgresDatabase, url: str, example: Example, plan: list[list[Any]]
) -> None:
    await set_budgets(url, "ns", [(example.budget.name, "dashscope", str(example.limit))])
    async with database.connect() as observer:
        for ops in plan:
            before = await leases_of(observer, example)
            await asyncio.gather(
                *(
                    perform(database, example, holder, op, before[holder])
                    for holder, op in zip(example.holders, ops, strict=True)
                )
            )
            await check(observer, example)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=rounds, limit=limits)
def test_leases_keep_the_money_right_under_racing_connections(
    loop: asyncio.Runner,
    lease_db: tuple[PostgresDatabase, str],
    plan: list[list[Any]],
    limit: Decimal,
) -> None:
    database, url = lease_db
    number = next(_examples)
    example = Example(key(f"p{number}"), [f"ns/e{number}-h{i}" for i in range(HOLDERS)], limit)
    loop.run(run(database, url, example, plan))


_examples = itertools.count()


async def older_than_a_ttl(database: PostgresDatabase) -> bool:
    """Within one TTL of the server's start nothing is reclaimed (the restart grace)."""
    async with database.connect() as conn:
        [(age,)] = await conn.fetch("SELECT now() - pg_postmaster_start_time()")
    return bool(age.total_seconds() > TTL)


@pytest.fixture
def lease_db(loop: asyncio.Runner, pg_url: str) -> Iterator[tuple[PostgresDatabase, str]]:
    """One database for every example (each has a budget and holders of its own)."""
    loop.run(provision(pg_url, "ns"))
    # A connection for each holder and the observer: the holders race for real.
    database = PostgresDatabase(parse_url(pg_url), max_size=HOLDERS + 2)
    loop.run(poll_until(lambda: older_than_a_ttl(database), within=2 * TTL, every=0.2))
    yield database, pg_url
    loop.run(database.aclose())
