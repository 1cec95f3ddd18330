"""Writing ledger rows into the operator's Postgres ledger, as sidecars would."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from aegis.sidecar.contract.periods import period_of
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.models import LEDGER, Arm, LedgerRecord, Status


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


def lease(dsn: str, *, budget: str, provider: str, limit: str, amount: str) -> None:
    """A sidecar's budget lease of ``amount`` this month (money reserved, not spent)."""
    from aegis.sidecar.ledger.leases import take

    async def run() -> None:
        engine = create_engine(dsn)
        try:
            async with engine.begin() as connection:
                await take(
                    connection,
                    budget=budget,
                    period=period_of(datetime.now(UTC)),
                    provider=provider,
                    holder="t/rag-api-0",
                    limit=Decimal(limit),
                    want=Decimal(amount),
                )
        finally:
            await engine.dispose()

    asyncio.run(run())
