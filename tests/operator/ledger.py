"""Writing ledger rows into the operator's Postgres ledger: as sidecars would (their
namespace's tenant role, charged to a budget), or straight in as the owner."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from aegis.sidecar.contract import BudgetKey, BudgetScope
from aegis.sidecar.contract.periods import period_of
from aegis.sidecar.ledger.database import PostgresConnection, open_database
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.leases import take
from aegis.sidecar.ledger.models import LEDGER, Arm, LedgerRecord, Status
from aegis.sidecar.ledger.spool import encode_body
from aegis.sidecar.ledger.writes import write_postgres
from tests.sidecar.tenancy import tenant_url


def row(provider: str, cost: str, *, route: str = "rag-api", namespace: str = "t") -> LedgerRecord:
    now = datetime.now(UTC)
    return LedgerRecord(
        request_id=f"req-{uuid.uuid4().hex}",
        created_at=now,
        period=period_of(now),
        namespace=namespace,
        pod="rag-api-0",
        route=route,
        rule="critical",
        arm=Arm.STABLE,
        provider=provider,
        model="gpt-4o",
        data_class="internal",
        tokens_in=1000,
        tokens_out=200,
        cost_usd=Decimal(cost),
        latency_ms=420,
        status=Status.OK,
    )


async def insert_async(dsn: str, rows: list[LedgerRecord]) -> None:
    engine = create_engine(dsn)
    try:
        async with engine.begin() as connection:
            await connection.execute(LEDGER.insert(), [r.as_params() for r in rows])
    finally:
        await engine.dispose()


def insert(dsn: str, rows: list[LedgerRecord]) -> None:
    asyncio.run(insert_async(dsn, rows))


async def _as_tenant(
    dsn: str,
    namespace: str,
    budget: str,
    rows: list[LedgerRecord],
    want: Decimal,
    *,
    key: BudgetKey | None = None,
    period: str | None = None,
) -> None:
    """As the namespace's sidecar would: lease ``want`` of ``budget`` (which the operator
    must have written to the ledger; ``key``: another key than the namespace's own
    budget of that name, e.g. a cluster budget; ``period``: the budget's period key when
    it is not the UTC month), then write ``rows`` charged to it."""
    key = key or BudgetKey(BudgetScope.NAMESPACE, namespace, budget)
    holder = f"{namespace}/rag-api-0"
    database = open_database(await tenant_url(dsn, namespace))
    try:
        async with database.connect() as connection:
            assert isinstance(connection, PostgresConnection)
            if want > 0:
                await take(
                    connection, budget=key, period=period or period_of(datetime.now(UTC)),
                    holder=holder, want=want,
                )  # fmt: skip
            if rows:
                charged = key.encoded if period is None else f"{key.encoded}@{period}"
                bodies = [encode_body(r, charged) for r in rows]
                await write_postgres(connection, holder, rows, bodies)
    finally:
        await database.aclose()


def charge(
    dsn: str,
    budget: str,
    rows: list[LedgerRecord],
    key: BudgetKey | None = None,
    period: str | None = None,
) -> None:
    """Rows of one namespace (their own) charged to its budget ``budget`` (or to the
    budget ``key``, in its period ``period``), leased first."""
    namespace = rows[0].namespace
    total = sum((r.cost_usd for r in rows), Decimal(0))
    asyncio.run(_as_tenant(dsn, namespace, budget, rows, total, key=key, period=period))


def lease(dsn: str, *, namespace: str, budget: str, amount: str) -> None:
    """A sidecar's budget lease of ``amount`` this month (money reserved, not spent)."""
    asyncio.run(_as_tenant(dsn, namespace, budget, [], Decimal(amount)))
