"""Least privilege on a real PostgreSQL: what the sidecar role can and cannot do."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from aegis.sidecar.ledger import leases
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import migrate_async
from aegis.sidecar.ledger.roles import apply_grants, grant_sql
from aegis.sidecar.ledger.spool import Spool
from aegis.sidecar.ledger.store import LedgerStore
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.ledger_helpers import record

pytestmark = pytest.mark.postgres

D = Decimal


@dataclass
class Roles:
    owner_url: str
    sidecar_url: str
    reader_url: str


@pytest.fixture
def roles(postgres: PostgresServer, pg_url: str) -> Iterator[Roles]:
    database = pg_url.rsplit("/", 1)[1]
    suffix = uuid.uuid4().hex[:8]
    owner, sidecar, reader = (f"aegis_{k}_{suffix}" for k in ("owner", "sidecar", "reader"))
    for role in (owner, sidecar, reader):
        postgres.psql(f"CREATE ROLE {role} LOGIN")
    postgres.psql(f"GRANT ALL ON SCHEMA public TO {owner}", database)

    def url(role: str) -> str:
        return pg_url.replace("postgresql://postgres@", f"postgresql://{role}@")

    yield Roles(url(owner), url(sidecar), url(reader))
    postgres.drop_database(database)
    for role in (sidecar, reader, owner):
        postgres.psql(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
async def granted(roles: Roles) -> AsyncIterator[Roles]:
    await migrate_async(roles.owner_url)  # the owner migrates: it owns everything
    engine = create_engine(roles.owner_url, isolation_level="AUTOCOMMIT")
    sidecar_role = roles.sidecar_url.split("//")[1].split("@")[0]
    reader_role = roles.reader_url.split("//")[1].split("@")[0]
    async with engine.connect() as conn:
        await apply_grants(conn, sidecar_role, reader_role)
        await leases.set_limit(conn, "dash", D(5))
    await engine.dispose()
    yield roles


async def test_sidecar_role_writes_rows_and_leases_and_nothing_else(
    granted: Roles, tmp_path: Path
) -> None:
    async with LedgerStore(
        granted.sidecar_url, spool=Spool(tmp_path / "spool"), holder="ns/a"
    ) as store:
        engine = store.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            # It may pass any limit; the operator's 5 USD caps it.
            grant = await leases.take(
                conn,
                budget="dash",
                period="2026-11",
                provider="dashscope",
                holder="ns/a",
                limit=D(1000),
                want=D(100),
            )
            assert (grant.granted, grant.limit) == (D(5), D(5))
        store.charge_to = lambda r: "dash"
        store.append(record(1, cost_usd=D("0.5")))
        await store.flush()
        assert store.rows_written == 1
        async with engine.connect() as conn:
            back = await leases.give_back(
                conn, budget="dash", period="2026-11", holder="ns/a", amount=D(10), close=True
            )
            assert back.returned == D("4.5")
            assert await leases.takeover(conn, "ns/a") == []
            refused = [
                "SELECT * FROM ledger_entries",
                "UPDATE ledger_entries SET cost_usd = 0",
                "DELETE FROM ledger_entries",
                "INSERT INTO ledger_entries (request_id) VALUES ('x')",
                "UPDATE budget_limits SET limit_usd = 1000",
                "INSERT INTO budget_limits VALUES ('other', 1000, now())",
                "UPDATE budget_periods SET limit_usd = 1000, committed_usd = 0",
                "DELETE FROM budget_leases",
                "SELECT aegis_lease_settle('dash', '2026-11', 'ns/a', -5)",
                "TRUNCATE ledger_entries",
                "CREATE TABLE evil (x int)",
            ]
            for sql in refused:
                with pytest.raises(DBAPIError, match="permission denied"):
                    await conn.execute(text(sql))


async def test_reader_role_reads_but_cannot_write(granted: Roles) -> None:
    engine = create_engine(granted.reader_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM ledger_entries"))).scalar() == 0
            for sql in (
                "UPDATE budget_limits SET limit_usd = 1",
                "SELECT aegis_lease_takeover('ns/a')",
            ):
                with pytest.raises(DBAPIError, match="permission denied"):
                    await conn.execute(text(sql))
    finally:
        await engine.dispose()


def test_grant_sql_is_a_script_and_refuses_odd_names() -> None:
    script = grant_sql("aegis_sidecar", "aegis_reader")
    assert 'GRANT EXECUTE ON FUNCTION "public".aegis_lease_take(' in script
    assert "UPDATE" not in script and "DELETE" not in script
    with pytest.raises(ValueError, match="plain role"):
        grant_sql('x"; DROP TABLE ledger_entries; --')
