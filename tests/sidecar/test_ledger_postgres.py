"""The same ledger code on a real PostgreSQL server (asyncpg): a drop-in backend."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import pytest

from aegis.sidecar.budgets import BudgetBook
from aegis.sidecar.ledger.database import PostgresConnection
from aegis.sidecar.ledger.migrate import head_revision, migrate_async
from aegis.sidecar.ledger.report import export, report, usage
from aegis.sidecar.ledger.store import LedgerStore
from tests.sidecar.ledger_helpers import BASE_TIME, budget, record
from tests.sidecar.shared_helpers import fetch
from tests.sidecar.tenancy import provision

pytestmark = pytest.mark.postgres


async def test_migrate_store_and_read_on_postgres(pg_url: str) -> None:
    assert await migrate_async(pg_url) == head_revision()
    assert await migrate_async(pg_url) == head_revision()  # idempotent
    await provision(pg_url, "ns", migrate=False)
    inserts: list[int] = []

    def count(query: Any) -> None:
        # The store's batches go as simple-protocol queries (no parameters: one round
        # trip), the batch a JSON array literal: count its rows.
        if "aegis.ledger_write(" in query.query and not query.args:
            inserts.append(query.query.count('"req-'))

    # migrate=False on PostgreSQL; the rows are of namespace ns, as the holder is
    async with LedgerStore(pg_url, batch_size=100, holder="ns/pod") as store:
        await store.flush()  # bound: the writer's connection is the pool's last used
        async with store.database.connect() as connection:  # the pool is LIFO: that one
            assert isinstance(connection, PostgresConnection)
            connection.driver.add_query_logger(count)
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
        [(column_type,)] = await fetch(
            pg_url,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'aegis.ledger_entries'::regclass AND attname = 'cost_usd'",
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


# Text a literal must carry unchanged: quotes, backslashes (JSON escapes them too), a
# dollar quote, a would-be statement, non-ASCII and an escaped control character.
AWKWARD = "o'brien\\'); DROP TABLE aegis.ledger_entries; -- $$ E'\\x41' \"q\" 模型 é\n\t"


async def test_batches_carry_any_text_unchanged(pg_url: str) -> None:
    await provision(pg_url, "ns")
    rows = [
        record(1, model=AWKWARD, route="r'\\", fallback_reason="\\\\'", workload=AWKWARD),
        record(2, pod="p" + "'" * 60, model="\\" * 64, pii_detectors="email,'phone'"),
    ]
    async with LedgerStore(pg_url, holder="ns/pod") as store:
        for row in rows:
            store.append(row)
        await store.flush()
        assert store.rows_written == 2
        for row in rows:  # replayed: skipped as duplicates, whatever the text
            store.append(row)
        await store.flush()
        assert (store.rows_written, store.duplicates_skipped) == (2, 2)
    stored = await fetch(
        pg_url,
        "SELECT model, route, fallback_reason, workload, pod, pii_detectors "
        "FROM aegis.ledger_entries ORDER BY request_id",
    )
    assert [tuple(r) for r in stored] == [
        (AWKWARD, "r'\\", "\\\\'", AWKWARD, "rag-api-7d9f-abcde", None),
        ("\\" * 64, "rag-api", None, None, "p" + "'" * 60, "email,'phone'"),
    ]


async def test_a_value_out_of_range_rejects_that_row_only(pg_url: str) -> None:
    # integer overflow is a data exception (SQLSTATE 22003): permanent, so the row is
    # isolated and rejected, and the rest of its batch is written.
    await provision(pg_url, "ns")
    async with LedgerStore(pg_url, holder="ns/pod") as store:
        store.append(record(1))
        store.append(record(2, tokens_in=2**31))
        store.append(record(3))
        await store.flush()
        assert (store.rows_written, store.rows_rejected) == (2, 1)
    stored = await fetch(pg_url, "SELECT request_id FROM aegis.ledger_entries ORDER BY 1")
    assert [r for (r,) in stored] == ["req-000001", "req-000003"]
