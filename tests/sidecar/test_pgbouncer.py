"""The ledger through PgBouncer in transaction pooling mode.

The suites that matter run both ways (``THROUGH_PGBOUNCER`` in this package's
conftest); this module checks the pooler itself: that the test bed reproduces the
prepared-statement trap a transaction pooler sets for asyncpg's defaults, that the
ledger's engine does not fall into it, and that many clients share a bounded number
of server connections.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest
from sqlalchemy import text

from aegis.sidecar.ledger.database import open_database
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.leases import take
from aegis.sidecar.ledger.store import LedgerStore
from tests.controlplane.pgbouncer import PgBouncerServer
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.ledger_helpers import record
from tests.sidecar.shared_helpers import fetch, money
from tests.sidecar.tenancy import key, provision

pytestmark = pytest.mark.postgres


async def test_named_prepared_statements_break_through_the_pooler(
    postgres: PostgresServer, pgbouncer: PgBouncerServer
) -> None:
    """asyncpg's defaults (statements prepared by name and cached per client
    connection): the next transaction of the same client may run on another server
    connection, where the cached statement does not exist."""
    url = pgbouncer.via(postgres.create_database())
    first = await asyncpg.connect(url)
    second = await asyncpg.connect(url)
    try:
        assert await first.fetchval("SELECT 1") == 1  # prepared on server connection S1
        async with second.transaction():  # S1 is now second's until it commits
            with pytest.raises(asyncpg.PostgresError, match="prepared statement"):
                await first.fetchval("SELECT 1")  # cached, sent to a new S2
        safe = await asyncpg.connect(url, statement_cache_size=0)
        try:
            assert await safe.fetchval("SELECT 1") == 1
            async with second.transaction():
                assert await safe.fetchval("SELECT 1") == 1  # unnamed: one exchange
        finally:
            await safe.close()
    finally:
        await first.close()
        await second.close()
        postgres.drop_database(url.rsplit("/", 1)[1])


async def test_the_ledger_engine_prepares_nothing_by_name(
    postgres: PostgresServer, pgbouncer: PgBouncerServer
) -> None:
    """The sidecar's pools (lease calls, parameterised statements) and the operator's
    SQLAlchemy engines, busy at once through a transaction-mode pooler."""
    direct = postgres.create_database()
    url = pgbouncer.via(direct)
    try:
        await provision(url, "ns", [("dash", "dashscope", "1000")])
        databases = [open_database(url) for _ in range(4)]
        engines = [create_engine(url, isolation_level="AUTOCOMMIT") for _ in range(2)]

        async def client(index: int) -> None:
            database = databases[index % len(databases)]
            engine = engines[index % len(engines)]
            for j in range(25):
                async with database.connect() as connection:
                    grant = await take(
                        connection,
                        budget=key("dash"),
                        period="2026-11",
                        holder=f"ns/pod-{index}",
                        want=Decimal("0.5"),
                        need=Decimal("0.01"),
                    )
                    assert grant.granted == Decimal("0.5")
                    row = await connection.fetchrow("SELECT $1::integer + $2::integer", index, j)
                    assert row is not None and row[0] == index + j
                async with engine.connect() as plain:
                    value = await plain.scalar(
                        text("SELECT CAST(:i AS integer) + :j"), {"i": index, "j": j}
                    )
                    assert value == index + j

        try:
            await asyncio.gather(*(client(i) for i in range(16)))
        finally:
            for database in databases:
                await database.aclose()
            for engine in engines:
                await engine.dispose()
        committed = await money(direct, "SELECT sum(amount_usd) FROM aegis.budget_leases")
        assert committed == await money(direct, "SELECT committed_usd FROM aegis.budget_periods")
        assert committed == Decimal("0.5") * 16 * 25
    finally:
        postgres.drop_database(direct.rsplit("/", 1)[1])


async def test_many_writers_share_a_few_server_connections(
    postgres: PostgresServer, pgbouncer: PgBouncerServer
) -> None:
    direct = postgres.create_database()
    database = direct.rsplit("/", 1)[1]
    url = pgbouncer.via(direct)
    try:
        await provision(url, "ns")
        stores = [
            LedgerStore(url, holder=f"ns/pod-{i}", batch_size=10, flush_interval=0.01)
            for i in range(60)
        ]
        await asyncio.gather(*(s.start() for s in stores))
        try:
            for n in range(20):
                for i, store in enumerate(stores):
                    store.append(record(i * 1000 + n, pod=f"pod-{i}"))
            await asyncio.gather(*(s.flush() for s in stores))
            peak = pgbouncer.server_connections(database)
        finally:
            await asyncio.gather(*(s.aclose() for s in stores))
        assert await fetch(direct, "SELECT count(*) FROM aegis.ledger_entries") == [(1200,)]
        assert 0 < peak <= pgbouncer.pool_size
        backends = await fetch(
            direct,
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'",
        )
        assert backends[0][0] <= pgbouncer.pool_size + 1  # + this query's own session
    finally:
        postgres.drop_database(database)
