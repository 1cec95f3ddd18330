"""The session PostgreSQL server is a real one: row locks, isolation, restart on the same port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.controlplane.postgres import PostgresServer, sqlalchemy_url

pytestmark = pytest.mark.postgres

_SELECT_FOR_UPDATE = "SELECT balance FROM account WHERE id = 1 FOR UPDATE"


@pytest.fixture
async def account_db(pg_url: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE TABLE account (id int PRIMARY KEY, balance int NOT NULL);"
            "INSERT INTO account VALUES (1, 100);"
        )
    finally:
        await conn.close()
    yield pg_url


async def _blocked_by(observer: asyncpg.Connection, waiter_pid: int) -> list[int]:
    """Poll (with a deadline) until `waiter_pid` waits on a lock; return the blockers."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        blockers: list[int] = await observer.fetchval("SELECT pg_blocking_pids($1)", waiter_pid)
        if blockers:
            return blockers
        await asyncio.sleep(0.02)  # poll interval; the deadline is the loop's condition
    raise AssertionError(f"backend {waiter_pid} never waited on a lock")


async def test_select_for_update_blocks_second_connection(account_db: str) -> None:
    first, second, observer = [await asyncpg.connect(account_db) for _ in range(3)]
    try:
        tx = first.transaction()
        await tx.start()
        assert await first.fetchval(_SELECT_FOR_UPDATE) == 100

        # While the first transaction holds the row lock, others cannot take it ...
        with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
            async with second.transaction():
                await second.fetchval(_SELECT_FOR_UPDATE + " NOWAIT")
        with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
            async with second.transaction():
                await second.execute("SET LOCAL lock_timeout = '100ms'")
                await second.fetchval(_SELECT_FOR_UPDATE)
        async with second.transaction():
            assert await second.fetchval(_SELECT_FOR_UPDATE + " SKIP LOCKED") is None

        # ... and a plain FOR UPDATE waits, blocked by exactly the first backend,
        async def locked_read() -> int:
            async with second.transaction():
                balance: int = await second.fetchval(_SELECT_FOR_UPDATE)
                return balance

        waiter = asyncio.create_task(locked_read())
        assert await _blocked_by(observer, second.get_server_pid()) == [first.get_server_pid()]
        assert not waiter.done()

        # ... until the first commits; then it sees the committed row.
        await first.execute("UPDATE account SET balance = balance - 30 WHERE id = 1")
        await tx.commit()
        assert await asyncio.wait_for(waiter, timeout=10) == 70
    finally:
        for conn in (first, second, observer):
            await conn.close()


async def test_each_test_gets_an_empty_database(pg_url: str, postgres: PostgresServer) -> None:
    database = pg_url.rsplit("/", 1)[1]
    assert pg_url == postgres.url(database)
    assert sqlalchemy_url(pg_url) == pg_url.replace("postgresql://", "postgresql+asyncpg://")
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == database
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0
    finally:
        await conn.close()


async def test_stop_and_start_keep_port_and_data(account_db: str, postgres: PostgresServer) -> None:
    port = postgres.port
    postgres.stop()  # in the loop thread on purpose: it is quick, and the outage is the point
    assert not postgres.running
    with pytest.raises(OSError):
        await asyncpg.connect(account_db, timeout=5)
    postgres.start()
    assert postgres.port == port
    conn = await asyncpg.connect(account_db)
    try:
        assert await conn.fetchval("SELECT balance FROM account WHERE id = 1") == 100
    finally:
        await conn.close()
