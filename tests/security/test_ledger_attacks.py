"""A hostile namespace against the shared ledger, on a real PostgreSQL, with the DSN its
own pods are given: it must not spend, read, write or close anything of another
namespace, nor run code as the owner.

Every test here passed as an attack on the ledger before tenancy (one shared sidecar
role, limits passed by the caller, functions that resolved names through ``public``);
the attacks are written against :mod:`tests.security.surface` so that they can be run
on such a ledger unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.models import Status
from tests.controlplane.postgres import PostgresServer
from tests.security import surface
from tests.security.surface import Installed

pytestmark = pytest.mark.postgres

D = Decimal
A, B = "team-a", "team-b"


@pytest.fixture
async def ledger(postgres: PostgresServer, pg_url: str) -> AsyncIterator[Installed]:
    installed = await surface.install(postgres, pg_url, [A, B])
    yield installed
    postgres.drop_database(pg_url.rsplit("/", 1)[1])
    for role in installed.roles:
        postgres.psql(f"DROP ROLE IF EXISTS {role}")


async def connect(url: str) -> AsyncConnection:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    return await engine.connect()


async def attempt(connection: AsyncConnection, call: object) -> object:
    """The outcome of an attack step: its result, or the database's refusal."""
    try:
        return await call  # type: ignore[misc]
    except DBAPIError as refused:
        await connection.rollback()
        return refused
    except Exception as refused:  # e.g. NotGranted, raised for the database's refusal
        return refused


async def test_limit_inflation_gets_no_more_than_the_operators_limit(ledger: Installed) -> None:
    a = await connect(ledger.dsn[A])
    b = await connect(ledger.dsn[B])
    try:
        # Team A asks for a million dollars of its own budget, and of team B's.
        own = await attempt(a, surface.take(a, A, f"{A}/pod-1", D(1_000_000)))
        assert own == surface.LIMIT, own  # what the operator wrote, no more
        foreign = await attempt(a, surface.take(a, B, f"{A}/pod-1", D(1_000_000)))
        assert not (isinstance(foreign, Decimal) and foreign > 0), foreign
        # Team B's money is all still there for team B.
        assert await surface.take(b, B, f"{B}/pod-1", D(5)) == surface.LIMIT
    finally:
        await a.close()
        await b.close()


async def test_other_budgets_cannot_be_read(ledger: Installed) -> None:
    a = await connect(ledger.dsn[A])
    b = await connect(ledger.dsn[B])
    try:
        await surface.take(b, B, f"{B}/pod-1", D(3))
        seen = await attempt(a, surface.read_budget(a, B, f"{A}/pod-1"))
        assert not isinstance(seen, tuple), f"team A read team B's budget: {seen}"
        # A budget that does not exist is refused the same way: nothing to tell apart.
        missing = await attempt(a, surface.read_budget(a, "team-none", f"{A}/pod-1"))
        assert type(missing) is type(seen)
        assert str(missing).replace("team-none", B) == str(seen)
        assert await surface.committed(ledger.owner_url, B) == D(3)
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("holder", [f"{A}/pod-1", f"{B}/pod-1"])
async def test_rows_are_written_for_the_callers_namespace_only(
    ledger: Installed, holder: str
) -> None:
    a = await connect(ledger.dsn[A])
    b = await connect(ledger.dsn[B])
    try:
        await surface.take(b, B, f"{B}/pod-1", D(2))
        # Team A writes a 5,000 USD error into team B's namespace, charged to B's budget
        # (on B's rollout arm too, which B's rollout analysis would read).
        forged = surface.row(B, "5000", status=Status.ERROR)
        outcome = await attempt(a, surface.write(a, holder, forged, B))
        assert outcome != 1, "the forged row was written"
        assert await surface.rows_of(ledger.owner_url, B) == []
        assert await surface.committed(ledger.owner_url, B) == D(2)
        # A's own rows may not be charged to B's budget either.
        mine = surface.row(A, "7")
        await attempt(a, surface.write(a, f"{A}/pod-1", mine, B))
        assert await surface.committed(ledger.owner_url, B) == D(2)
    finally:
        await a.close()
        await b.close()


async def test_another_namespaces_lease_cannot_be_taken_over(ledger: Installed) -> None:
    a = await connect(ledger.dsn[A])
    b = await connect(ledger.dsn[B])
    try:
        await surface.take(b, B, f"{B}/pod-1", D(4))
        closed = await attempt(a, surface.takeover(a, f"{B}/pod-1"))
        assert closed in (0, None) or isinstance(closed, Exception), closed
        # B's lease is still open with its money: a renewal takes nothing new and the
        # budget still counts the 4 USD as B's.
        assert await surface.committed(ledger.owner_url, B) == D(4)
        assert await surface.take(b, B, f"{B}/pod-1", D(1)) == D(1)
        assert await surface.committed(ledger.owner_url, B) == D(5)
    finally:
        await a.close()
        await b.close()


async def test_a_function_in_public_never_runs_as_the_owner(
    ledger: Installed, postgres: PostgresServer, pg_url: str
) -> None:
    """PostgreSQL 14 lets every role create objects in ``public`` unless revoked; a DBA
    may grant it. A tenant that can, plants a better-typed ``make_interval`` that empties
    the ledger, and calls a lease function: it must not run there."""
    database = pg_url.rsplit("/", 1)[1]
    tenant = make_url(ledger.dsn[A]).username
    postgres.psql(f"GRANT CREATE ON SCHEMA public TO {tenant}", database)
    b = await connect(ledger.dsn[B])
    a = await connect(ledger.dsn[A])
    try:
        await surface.take(b, B, f"{B}/pod-1", D(2))
        assert await surface.write(b, f"{B}/pod-1", surface.row(B, "1"), B) == 1
        await a.execute(
            text(
                "CREATE FUNCTION public.make_interval(secs integer) RETURNS interval "
                f"LANGUAGE sql AS $$ DELETE FROM {surface.LEDGER_TABLE}; "
                "SELECT interval '60 seconds' $$"
            )
        )
        await attempt(a, surface.take(a, A, f"{A}/pod-1", D(1)))
        assert await surface.entries(ledger.owner_url) == 1, "the ledger was emptied"
    finally:
        await a.close()
        await b.close()
