"""The partitioned ledger on PostgreSQL: months, the default partition, replays through
the partitioned table, the summary table, and the migration that converts the table."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import (
    alembic_config,
    current_revision,
    migrate_async,
    script_head,
)
from tests.sidecar.ledger_helpers import record
from tests.sidecar.shared_helpers import write_rows
from tests.sidecar.tenancy import key, provision

pytestmark = pytest.mark.postgres

D = Decimal
DASH = key("dash")
MIGRATION = importlib.import_module(
    "aegis.sidecar.ledger.migrations.versions.0007_ledger_partitions"
)
BEFORE = str(MIGRATION.down_revision)  # the head before the ledger was partitioned
MIDNIGHT = datetime(2026, 11, 1, tzinfo=UTC)  # October ends, November begins (UTC)


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    await provision(pg_url, "ns", [("dash", "dashscope", "100")])
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    yield engine
    await engine.dispose()


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql), params)]


async def placement(engine: AsyncEngine) -> dict[str, str]:
    """Each row's request id -> the partition it is stored in."""
    found = await rows(
        engine, "SELECT request_id, tableoid::regclass::text FROM aegis.ledger_entries"
    )
    return {request_id: partition for request_id, partition in found}


async def partitions(engine: AsyncEngine) -> list[str]:
    found = await rows(
        engine,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'aegis.ledger_entries'::regclass ORDER BY 1",
    )
    return [name for (name,) in found]


async def ensure(engine: AsyncEngine, ahead: int, at: datetime) -> int:
    [(created,)] = await rows(
        engine, "SELECT aegis.ensure_partitions(:ahead, :at)", ahead=ahead, at=at
    )
    return int(created)


def boundary_rows(first: int) -> list[Any]:
    """The last microsecond of October and the first of November in UTC, and an instant
    an application at UTC+10 calls November but is October in UTC."""
    instants = [
        MIDNIGHT - timedelta(microseconds=1),
        MIDNIGHT,
        datetime(2026, 11, 1, 9, 59, 59, tzinfo=timezone(timedelta(hours=10))),
    ]
    return [
        record(first + i, created_at=at, period=f"{at.astimezone(UTC):%Y-%m}")
        for i, at in enumerate(instants)
    ]


async def test_rows_land_in_their_months_partition_across_the_boundary(
    engine: AsyncEngine,
) -> None:
    # The migration made this month's partition and the next three (the real clock):
    # October and November 2026 have none yet, so their rows wait in the default one.
    assert "ledger_entries_default" in await partitions(engine)
    async with engine.connect() as conn:
        assert await write_rows(conn, "ns/p", boundary_rows(1), [""] * 3) == 3
    assert set((await placement(engine)).values()) == {"aegis.ledger_entries_default"}

    # Creation ahead, at a frozen instant: October's partition and the next month's;
    # the rows waiting in the default partition move into theirs.
    assert await ensure(engine, 1, datetime(2026, 10, 20, tzinfo=UTC)) == 2
    assert await ensure(engine, 1, datetime(2026, 10, 20, tzinfo=UTC)) == 0  # idempotent
    assert {"ledger_entries_2026_10", "ledger_entries_2026_11"} <= set(await partitions(engine))
    async with engine.connect() as conn:
        assert await write_rows(conn, "ns/p", boundary_rows(11), [""] * 3) == 3
    assert await placement(engine) == {
        "req-000001": "aegis.ledger_entries_2026_10",
        "req-000002": "aegis.ledger_entries_2026_11",
        "req-000003": "aegis.ledger_entries_2026_10",
        "req-000011": "aegis.ledger_entries_2026_10",
        "req-000012": "aegis.ledger_entries_2026_11",
        "req-000013": "aegis.ledger_entries_2026_10",
    }
    # A month without a partition (far ahead) still takes rows: the default one.
    far = record(99, created_at=datetime(2031, 1, 1, tzinfo=UTC), period="2031-01")
    async with engine.connect() as conn:
        assert await write_rows(conn, "ns/p", [far], [""]) == 1
    assert (await placement(engine))["req-000099"] == "aegis.ledger_entries_default"
    # Partition pruning: a month's query reads that month's partition only.
    plan = await rows(
        engine,
        "EXPLAIN SELECT count(*) FROM aegis.ledger_entries "
        "WHERE created_at >= '2026-11-01 00:00+00' AND created_at < '2026-12-01 00:00+00'",
    )
    scanned = " ".join(line for (line,) in plan)
    assert "ledger_entries_2026_11" in scanned
    assert "ledger_entries_2026_10" not in scanned


async def test_a_replay_through_the_partitioned_table_inserts_and_charges_nothing(
    engine: AsyncEngine,
) -> None:
    await ensure(engine, 1, datetime(2026, 10, 20, tzinfo=UTC))
    batch = boundary_rows(1)
    for row in batch:
        object.__setattr__(row, "cost_usd", D("0.25"))
    charges = [DASH.encoded] * len(batch)
    async with engine.connect() as conn:
        assert await write_rows(conn, "ns/p", batch, charges) == 3
        # The spool's replay: the same rows, bytes and all (same created_at), again,
        # alone and mixed with a new row.
        assert await write_rows(conn, "ns/p", batch, charges) == 0
        fresh = record(7, created_at=MIDNIGHT, cost_usd=D("1"))
        assert await write_rows(conn, "ns/p", [*batch, fresh], [*charges, DASH.encoded]) == 1
    assert await rows(engine, "SELECT count(*), sum(cost_usd) FROM aegis.ledger_entries") == [
        (4, D("1.75"))
    ]
    settled = await rows(
        engine,
        "SELECT period, sum(settled_usd) FROM aegis.budget_leases GROUP BY 1 ORDER BY 1",
    )
    assert settled == [("2026-10", D("0.50")), ("2026-11", D("1.25"))]
    summary = await rows(
        engine,
        "SELECT period, requests, cost_usd FROM aegis.ledger_summary ORDER BY 1",
    )
    assert summary == [("2026-10", 2, D("0.50")), ("2026-11", 2, D("1.25"))]


async def test_the_summary_counts_what_the_ledger_holds(engine: AsyncEngine) -> None:
    await ensure(engine, 0, datetime(2026, 11, 3, tzinfo=UTC))
    batch = [
        record(i, status=status, model=model, tokens_in=10, tokens_out=2, cost_usd=D("0.1"))
        for i, (status, model) in enumerate(
            [("ok", "a"), ("error", "a"), ("refused", "a"), ("ok", "b"), ("ok", "b")]
        )
    ]
    async with engine.connect() as conn:
        await write_rows(conn, "ns/p", batch[:3], [""] * 3)
        await write_rows(conn, "ns/p", batch, [""] * 5)  # two batches, one overlapping
    summary = await rows(
        engine,
        "SELECT period, namespace, route, provider, model, requests, errors, refused, "
        "tokens_in, tokens_out, cost_usd FROM aegis.ledger_summary ORDER BY model",
    )
    assert summary == [
        ("2026-11", "ns", "rag-api", "dashscope", "a", 3, 1, 1, 30, 6, D("0.3")),
        ("2026-11", "ns", "rag-api", "dashscope", "b", 2, 0, 0, 20, 4, D("0.2")),
    ]


async def test_the_migration_moves_every_row_and_keeps_what_the_table_had(pg_url: str) -> None:
    assert await migrate_async(pg_url, BEFORE) == BEFORE
    await provision(pg_url, "ns", [("dash", "dashscope", "100")], migrate=False)
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("CREATE ROLE e_reader NOLOGIN"))
            await conn.execute(text("GRANT USAGE ON SCHEMA aegis TO e_reader"))
            await conn.execute(text("GRANT SELECT ON aegis.ledger_entries TO e_reader"))
            # three months, written with the previous head's aegis.ledger_write
            starts = {  # 50 rows in each of three months, counting away from midnight
                0: (MIDNIGHT - timedelta(days=40), 1),
                100: (MIDNIGHT - timedelta(seconds=1), -1),
                200: (MIDNIGHT, 1),
            }
            old = [
                record(first + j, created_at=at + timedelta(seconds=j * sign), cost_usd=D("0.01"))
                for first, (at, sign) in starts.items()
                for j in range(50)
            ]
            assert await write_rows(conn, "ns/p", old, [DASH.encoded] * len(old)) == 150
        before = await constraints_and_indexes(engine)

        assert await migrate_async(pg_url, script_head()) == script_head()
        assert await rows(engine, "SELECT count(*), sum(cost_usd) FROM aegis.ledger_entries") == [
            (150, D("1.50"))
        ]
        assert {
            "ledger_entries_2026_09",
            "ledger_entries_2026_10",
            "ledger_entries_2026_11",
            "ledger_entries_default",
        } <= set(await partitions(engine))
        placed = await rows(
            engine,
            "SELECT tableoid::regclass::text, count(*) FROM aegis.ledger_entries GROUP BY 1 "
            "ORDER BY 1",
        )
        assert placed == [
            ("aegis.ledger_entries_2026_09", 50),
            ("aegis.ledger_entries_2026_10", 50),
            ("aegis.ledger_entries_2026_11", 50),
        ]
        after = await constraints_and_indexes(engine)
        assert after["checks"] == before["checks"]
        # every index carried over; 0012 then dropped the one spend reads no longer use
        dropped = "ix_ledger_entries_provider_period_cost_usd"
        assert dropped in [name for name, _ in before["indexes"]]
        assert after["indexes"] == [i for i in before["indexes"] if i[0] != dropped]
        assert after["primary"] == "PRIMARY KEY (request_id, created_at)"
        assert await rows(
            engine,
            "SELECT has_table_privilege('e_reader', 'aegis.ledger_entries', 'SELECT'), "
            "has_table_privilege('e_reader', 'aegis.ledger_summary', 'SELECT'), "
            "has_table_privilege('e_reader', 'aegis.ledger_entries', 'INSERT')",
        ) == [(True, True, False)]
        # The summary holds the rows already there; a replay of them adds nothing.
        assert await rows(
            engine, "SELECT sum(requests), sum(cost_usd) FROM aegis.ledger_summary"
        ) == [(150, D("1.50"))]
        async with engine.connect() as conn:
            assert await write_rows(conn, "ns/p", old, [DASH.encoded] * len(old)) == 0
        assert await rows(engine, "SELECT sum(settled_usd) FROM aegis.budget_leases") == [
            (D("1.50"),)
        ]

        # Down again: one plain table with every row, its key and indexes as before.
        await downgrade(pg_url, BEFORE)
        assert await rows(engine, "SELECT count(*), sum(cost_usd) FROM aegis.ledger_entries") == [
            (150, D("1.50"))
        ]
        assert await partitions(engine) == []
        assert await constraints_and_indexes(engine) == before
        assert await rows(
            engine,
            "SELECT to_regclass('aegis.ledger_summary') IS NULL, "
            "has_table_privilege('e_reader', 'aegis.ledger_entries', 'SELECT')",
        ) == [(True, True)]
        async with engine.connect() as conn:  # the previous writer works again
            assert await write_rows(conn, "ns/p", [record(999)], [""]) == 1
            assert await write_rows(conn, "ns/p", [record(999)], [""]) == 0
    finally:
        await engine.dispose()


async def downgrade(url: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
        assert await current_revision(engine) == revision
    finally:
        await engine.dispose()


async def constraints_and_indexes(engine: AsyncEngine) -> dict[str, Any]:
    checks = await rows(
        engine,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'aegis.ledger_entries'::regclass AND contype = 'c' ORDER BY 1",
    )
    [(primary,)] = await rows(
        engine,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'aegis.ledger_entries'::regclass AND contype = 'p' "
        "AND conname = 'pk_ledger_entries'",
    )
    indexes = await rows(
        engine,
        "SELECT c.relname, replace(pg_get_indexdef(i.indexrelid), ' ON ONLY ', ' ON ') "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = 'aegis.ledger_entries'::regclass AND NOT i.indisprimary ORDER BY 1",
    )
    return {"checks": checks, "primary": primary, "indexes": indexes}
