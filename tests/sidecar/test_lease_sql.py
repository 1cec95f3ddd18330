"""The tenants' lease functions (migration 0003) on a real PostgreSQL, statement by
statement; the session's role acts for namespace ``ns``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection as SyncConnection

from aegis.sidecar.ledger import leases
from aegis.sidecar.ledger.database import Connection, PostgresDatabase
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import alembic_config, head_revision, migrate_async
from aegis.sidecar.ledger.urls import parse_url
from tests.sidecar.ledger_helpers import record
from tests.sidecar.shared_helpers import poll_until, write_rows
from tests.sidecar.tenancy import key, provision, set_budgets

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
    conn: Connection,
    holder: str,
    want: str,
    *,
    need: str = "0",
    ttl: int = 60,
    spare: str = "0",
    max_call: int = 0,
) -> leases.Grant:
    return await leases.take(
        conn,
        budget=DASH,
        period=P,
        holder=holder,
        want=D(want),
        need=D(need),
        ttl_seconds=ttl,
        spare=D(spare),
        max_call_seconds=max_call,
    )


async def period_row(conn: Connection) -> tuple[Decimal, Decimal, Decimal]:
    [row] = await conn.fetch(
        "SELECT limit_usd, committed_usd, overdraft_usd FROM aegis.budget_periods"
    )
    return row[0], row[1], row[2]


async def test_take_slices_fairly_and_never_past_the_limit(database: PostgresDatabase) -> None:
    async with database.connect() as conn:
        first = await take(conn, "ns/a", "4")
        assert (first.granted, first.lease_amount, first.committed, first.active) == (
            D(4),
            D(4),
            D(4),
            1,
        )
        # 6 left, one other active lease: a fair share is 3 even if 5 is wanted.
        second = await take(conn, "ns/b", "5")
        assert second.granted == D(3)
        # 3 left, two others: 1 each, unless the reservation needs more.
        assert (await take(conn, "ns/c", "5")).granted == D(1)
        assert (await take(conn, "ns/c", "5", need="1.5")).granted == D("1.5")
        # 0.5 left: a need of 1 cannot be met, so nothing is granted.
        refused = await take(conn, "ns/d", "5", need="1")
        assert refused.granted == 0
        assert refused.remaining == D("0.5")
        # Without a need: a fair share, 0.5 / 4 (a, b, c hold money; d asks).
        assert (await take(conn, "ns/d", "5")).granted == D("0.125")
        _, committed, overdraft = await period_row(conn)
        assert committed == D("9.625") and overdraft == 0


async def test_return_never_gives_back_settled_money(database: PostgresDatabase) -> None:
    async with database.connect() as conn:
        await take(conn, "ns/a", "4")
        inserted = await write_rows(
            conn,
            "ns/a",
            [record(1, cost_usd=D("1.25")), record(2, cost_usd=D(0))],
            [DASH.encoded, ""],
        )
        assert inserted == 2
        back = await leases.give_back(
            conn, budget=DASH, period=P, holder="ns/a", amount=D(10), close=True
        )
        assert (back.returned, back.lease_amount, back.lease_settled) == (
            D("2.75"),
            D("1.25"),
            D("1.25"),
        )
        assert (await period_row(conn))[1] == D("1.25")


async def test_replayed_rows_are_charged_once(database: PostgresDatabase) -> None:
    async with database.connect() as conn:
        await take(conn, "ns/a", "4")
        rows = [record(i, cost_usd=D("0.5")) for i in range(3)]
        assert await write_rows(conn, "ns/a", rows, [DASH.encoded] * 3) == 3
        assert await write_rows(conn, "ns/a", rows, [DASH.encoded] * 3) == 0  # replay
        # The same id twice in one batch is inserted and charged once.
        twice = [record(9, cost_usd=D("0.5")), record(9, cost_usd=D("0.5"))]
        assert await write_rows(conn, "ns/a", twice, [DASH.encoded] * 2) == 1
        grant = await take(conn, "ns/a", "0")
        assert grant.lease_settled == D(2)


async def test_spend_beyond_a_lease_is_charged_as_overdraft(database: PostgresDatabase) -> None:
    async with database.connect() as conn:
        await take(conn, "ns/a", "1")
        await write_rows(conn, "ns/a", [record(1, cost_usd=D("1.5"))], [DASH.encoded])
        _, committed, overdraft = await period_row(conn)
        assert (committed, overdraft) == (D("1.5"), D("0.5"))
        # A holder that never leased (e.g. a config that changed): all of it.
        await write_rows(conn, "ns/x", [record(2, cost_usd=D("0.25"))], [DASH.encoded])
        assert (await period_row(conn))[2] == D("0.75")


async def test_expired_leases_are_reclaimed_by_the_next_taker(database: PostgresDatabase) -> None:
    async with database.connect() as conn:
        # The dead holder said it would not commit 3 of its 4 before its next report.
        await take(conn, "ns/dead", "4", ttl=1, spare="3")
        await write_rows(conn, "ns/dead", [record(1, cost_usd=D("1"))], [DASH.encoded])
        # Within one TTL of the server's start nothing is reclaimed (the grace is the
        # taker's TTL, here 1 s), nor before the lease expires: take until it is.
        grants: list[leases.Grant] = []

        async def reclaimed() -> bool:
            grants.append(await take(conn, "ns/live", "0", ttl=1))
            return (await dead_lease(conn))[1] == "closed"

        await poll_until(reclaimed, within=20, every=0.1)
        assert await dead_lease(conn) == (D(1), "closed", 1)
        assert grants[-1].committed == D(1)
        # Every take before that one saw the dead lease's 4 still committed.
        assert all(grant.committed == D(4) for grant in grants[:-1])


async def dead_lease(conn: Connection) -> tuple[Decimal, str, int]:
    [lease] = await conn.fetch(
        "SELECT amount_usd, state, epoch FROM aegis.budget_leases WHERE holder = 'ns/dead'"
    )
    return lease[0], lease[1], lease[2]


async def test_takeover_closes_a_previous_life_at_its_settled_spend(
    database: PostgresDatabase,
) -> None:
    async with database.connect() as conn:
        await take(conn, "ns/a", "4", spare="3.25")
        await write_rows(conn, "ns/a", [record(1, cost_usd=D("0.75"))], [DASH.encoded])
        assert await leases.takeover(conn, "ns/a") == [(DASH, P, D("3.25"))]
        assert await leases.takeover(conn, "ns/a") == []
        assert (await period_row(conn))[1] == D("0.75")


async def test_the_limit_is_the_operators_and_applies_at_once(
    database: PostgresDatabase, pg_url: str
) -> None:
    async with database.connect() as conn:
        await set_budgets(pg_url, "ns", [("dash", "dashscope", "2")])
        grant = await take(conn, "ns/a", "5")
        assert (grant.granted, grant.limit) == (D(2), D(2))
        await set_budgets(pg_url, "ns", [("dash", "dashscope", "3")])
        assert (await take(conn, "ns/a", "5")).granted == D(1)


async def test_bad_amounts_are_refused(database: PostgresDatabase) -> None:
    async with database.connect() as conn:
        with pytest.raises(Exception, match="must be positive"):
            await take(conn, "ns/a", "-1")


async def test_a_budget_not_granted_is_an_answer_and_the_connection_stays_usable(
    database: PostgresDatabase,
) -> None:
    async with database.connect() as conn:
        with pytest.raises(leases.NotGranted, match="not granted to namespace ns"):
            await leases.take(conn, budget=key("none"), period=P, holder="ns/a", want=D(1))
        assert (await take(conn, "ns/a", "1")).granted == D(1)


async def test_migration_0002_downgrades_and_upgrades_again(pg_url: str) -> None:
    await migrate_async(pg_url)
    engine = create_engine(pg_url)

    def downgrade(connection: SyncConnection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")

    try:
        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
        async with engine.connect() as conn:
            tables = await conn.scalar(
                text("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'budget_%'")
            )
            functions = await conn.scalar(
                text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'aegis_%'")
            )
        assert (tables, functions) == (0, 0)
        assert await migrate_async(pg_url) == head_revision()
    finally:
        await engine.dispose()
