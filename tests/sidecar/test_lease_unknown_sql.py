"""Killed pods (migration 0008) on a real PostgreSQL, statement by statement: a dead
holder's lease is reclaimed only after its expiry plus its maximum call time, keeps
what the holder may have committed (its exposure) charged as unknown-outcome money,
and the dead holder's late rows settle against that money without being charged
twice. The session's role acts for namespace ``ns``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from aegis.sidecar.ledger import leases
from aegis.sidecar.ledger.budget_status import budget_status
from aegis.sidecar.ledger.database import Connection, PostgresDatabase
from aegis.sidecar.ledger.urls import parse_url
from tests.sidecar.ledger_helpers import record
from tests.sidecar.shared_helpers import poll_until, write_rows
from tests.sidecar.tenancy import key, provision

pytestmark = pytest.mark.postgres

D = Decimal
P = "2026-11"
DASH = key("dash")


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[PostgresDatabase]:
    await provision(pg_url, "ns", [("dash", "dashscope", "10")])
    database = PostgresDatabase(parse_url(pg_url))  # its connections write ledger rows too
    yield database
    await database.aclose()


async def take(
    conn: Connection, holder: str, want: str, *, spare: str = "0", max_call: int = 0
) -> leases.Grant:
    return await leases.take(
        conn,
        budget=DASH,
        period=P,
        holder=holder,
        want=D(want),
        ttl_seconds=1,
        spare=D(spare),
        max_call_seconds=max_call,
    )


LEASE = (
    "amount_usd",
    "settled_usd",
    "unknown_usd",
    "exposure_usd",
    "state",
    "epoch",
    "max_call_seconds",
    "reclaimed_at",
    "expires_at",
)


async def lease(conn: Connection, holder: str) -> Any:
    [row] = await conn.fetch(
        f"SELECT {', '.join(LEASE)} FROM aegis.budget_leases WHERE holder = $1", holder
    )
    return SimpleNamespace(**dict(zip(LEASE, row, strict=True)))


async def period_row(conn: Connection) -> tuple[Decimal, Decimal]:
    [row] = await conn.fetch("SELECT committed_usd, overdraft_usd FROM aegis.budget_periods")
    return row[0], row[1]


async def unknown(url: str) -> Decimal:
    """The budget's unknown-outcome money as the read side (budget status) shows it."""
    [status] = await budget_status(url, P)
    return status.unknown_usd


async def reclaim(conn: Connection, holder: str) -> None:
    """Take (nothing) as another holder until ``holder``'s lease is reclaimed."""

    async def reclaimed() -> bool:
        await take(conn, "ns/live", "0")
        return (await lease(conn, holder)).reclaimed_at is not None

    await poll_until(reclaimed, within=30, every=0.1)


async def test_a_dead_holders_exposure_stays_charged_after_its_call_time(
    database: PostgresDatabase,
) -> None:
    async with database.connect() as conn:
        # 4 leased; the holder will not commit 2 of them before its next report, its
        # calls last at most 2 s; 1 is settled when it dies.
        await take(conn, "ns/dead", "4", spare="2", max_call=2)
        await write_rows(conn, "ns/dead", [record(1, cost_usd=D(1))], [DASH.encoded])
        await reclaim(conn, "ns/dead")
        dead = await lease(conn, "ns/dead")
        # Not before expiry + the call time (the database's own clock).
        assert (dead.reclaimed_at - dead.expires_at).total_seconds() >= 2
        assert (dead.amount_usd, dead.settled_usd, dead.state, dead.epoch) == (
            D(2),
            D(1),
            "closed",
            1,
        )
        # The unsettled exposure (1) stays committed; the spare 2 went back.
        assert await period_row(conn) == (D(2), D(0))


async def test_late_rows_settle_against_the_kept_money_once(
    database: PostgresDatabase, pg_url: str
) -> None:
    async with database.connect() as conn:
        await take(conn, "ns/dead", "4", spare="2")
        await write_rows(conn, "ns/dead", [record(1, cost_usd=D(1))], [DASH.encoded])
        await reclaim(conn, "ns/dead")
        assert await unknown(pg_url) == D(1)  # all the reclaimed lease holds unsettled
        # The restarted pod replays the rows its previous life spooled (one was
        # written already: idempotent), then takes over.
        late = [record(1, cost_usd=D(1)), record(2, cost_usd=D("0.75"))]
        assert await write_rows(conn, "ns/dead", late, [DASH.encoded] * 2) == 1
        assert await period_row(conn) == (D(2), D(0))  # nothing charged twice
        assert await unknown(pg_url) == D("0.25")
        assert await leases.takeover(conn, "ns/dead") == [(DASH, P, D(0))]
        dead = await lease(conn, "ns/dead")
        # 0.25 was in flight when it died: unknown outcome, final.
        assert (dead.amount_usd, dead.settled_usd, dead.unknown_usd) == (D(2), D("1.75"), D("0.25"))
        assert dead.reclaimed_at is None
        assert await unknown(pg_url) == D("0.25")
        # The new life sees that money and can never give it back.
        grant = await take(conn, "ns/dead", "1")
        assert (grant.granted, grant.lease_amount, grant.unknown) == (D(1), D(3), D("0.25"))
        back = await leases.give_back(
            conn, budget=DASH, period=P, holder="ns/dead", amount=D(10), close=True
        )
        assert (back.returned, back.lease_amount, back.unknown) == (D(1), D(2), D("0.25"))
        assert await period_row(conn) == (D(2), D(0))
        assert await leases.takeover(conn, "ns/dead") == []


async def test_a_reclaimed_lease_returns_nothing_and_a_holder_back_keeps_it(
    database: PostgresDatabase,
) -> None:
    async with database.connect() as conn:
        await take(conn, "ns/cut", "4", spare="1")
        await reclaim(conn, "ns/cut")
        # Its holder was cut off, not dead: whatever it asks, the reclaimed money stays.
        back = await leases.give_back(
            conn, budget=DASH, period=P, holder="ns/cut", amount=D(10), close=False
        )
        assert (back.returned, back.lease_amount, back.epoch) == (D(0), D(3), 1)
        grant = await take(conn, "ns/cut", "0")
        assert (grant.lease_amount, grant.unknown, grant.epoch) == (D(3), D(3), 1)
        # Its rows, arriving now, settle within it.
        await write_rows(conn, "ns/cut", [record(1, cost_usd=D(2))], [DASH.encoded])
        assert await period_row(conn) == (D(3), D(0))


async def test_the_call_time_is_bounded_and_old_sidecars_keep_their_whole_lease(
    database: PostgresDatabase,
) -> None:
    async with database.connect() as conn:
        await take(conn, "ns/a", "1", max_call=10**9)
        assert (await lease(conn, "ns/a")).max_call_seconds == 3600
        with pytest.raises(Exception, match="must be positive"):
            await take(conn, "ns/a", "1", spare="-1")
        # The 0003 form (a sidecar of the previous version) reports no spare money.
        await conn.execute(
            "SELECT * FROM aegis.lease_take('Namespace', 'ns', 'dash', $1, 'ns/old', 4, 0, 1)", P
        )
        await write_rows(conn, "ns/old", [record(1, cost_usd=D(1))], [DASH.encoded])
        await reclaim(conn, "ns/old")
        old = await lease(conn, "ns/old")
        assert (old.amount_usd, old.settled_usd, old.exposure_usd) == (D(4), D(1), D(4))
