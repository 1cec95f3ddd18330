"""The same ledger code on a real PostgreSQL server (asyncpg): a drop-in backend."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, text

from aegis.sidecar.budgets import BudgetBook
from aegis.sidecar.ledger.migrate import head_revision, migrate_async
from aegis.sidecar.ledger.report import export, report, usage
from aegis.sidecar.ledger.store import LedgerStore
from tests.sidecar.ledger_helpers import BASE_TIME, budget, record
from tests.sidecar.tenancy import provision

pytestmark = pytest.mark.postgres


async def test_migrate_store_and_read_on_postgres(pg_url: str) -> None:
    assert await migrate_async(pg_url) == head_revision()
    assert await migrate_async(pg_url) == head_revision()  # idempotent
    await provision(pg_url, "ns", migrate=False)
    inserts: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("SELECT aegis.ledger_write("):
            inserts.append(len(json.loads(parameters[1])))  # the batch: a JSON array

    # migrate=False on PostgreSQL; the rows are of namespace ns, as the holder is
    async with LedgerStore(pg_url, batch_size=100, holder="ns/pod") as store:
        event.listen(store.engine.sync_engine, "before_cursor_execute", count)
        costs = [Decimal("0.000001") * i + Decimal("0.3") for i in range(250)]
        for i, cost in enumerate(costs):
            store.append(record(i, cost_usd=cost))
        store.append(record(0, cost_usd=Decimal(99)))  # a replayed request id
        await store.flush()
        # Three statements (one round trip each): insert + charge leases per batch.
        assert inserts == [100, 100, 51]
        assert store.rows_written == 250
        assert store.duplicates_skipped == 1
        assert await store.spent("dashscope", "2026-11") == sum(costs)
        async with store.engine.connect() as conn:
            column_type = await conn.scalar(
                text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'aegis.ledger_entries'::regclass AND attname = 'cost_usd'"
                )
            )
        assert column_type == "numeric(18,6)"

        book = await BudgetBook.open(
            [budget("dash", "dashscope", "100")], store, clock=lambda: BASE_TIME
        )
        [snap] = book.snapshot()
        assert snap.spent == sum(costs)

    rows = await usage(pg_url)
    assert [(r.month, r.namespace, r.provider, r.requests, r.cost_usd) for r in rows] == [
        ("2026-11", "ns", "dashscope", 250, sum(costs))
    ]
    assert rows[0].p95_latency_ms == 100 + 237  # nearest rank 238 of 250
    out = io.StringIO()
    assert await export(pg_url, "json", out=out) == 250
    assert sum(Decimal(r["cost_usd"]) for r in json.loads(out.getvalue())) == sum(costs)
    text_report = await report(pg_url, [budget("dash", "dashscope", "100")])
    assert "dashscope" in text_report
    assert "75.031125" in text_report
