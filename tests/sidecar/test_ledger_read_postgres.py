"""The read side on PostgreSQL: budget status, spend breakdown, rollout statistics, CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aegis.operator.cli import main
from aegis.sidecar.ledger import leases
from aegis.sidecar.ledger.budget_status import budget_status, spend_breakdown
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import head_revision
from aegis.sidecar.ledger.models import LEDGER, Arm, LedgerRecord, Status
from aegis.sidecar.ledger.rollout_stats import arm_stats
from aegis.sidecar.ledger.store import LedgerStore
from tests.sidecar.ledger_helpers import BASE_TIME, record, sqlite_url
from tests.sidecar.shared_helpers import driver_of, write_rows
from tests.sidecar.tenancy import key, provision

DASH = key("dash")

pytestmark = pytest.mark.postgres

D = Decimal


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    await provision(pg_url, "ns", [("dash", "dashscope", "10")])
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    yield engine
    await engine.dispose()


async def test_budget_status_splits_spent_reserved_and_remaining(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        for holder, want in (("ns/a", "3"), ("ns/b", "2")):
            await leases.take(
                await driver_of(conn), budget=DASH, period="2026-11", holder=holder, want=D(want)
            )
        await write_rows(conn, "ns/a", [record(1, cost_usd=D("1.5"))], [DASH.encoded])
        await write_rows(conn, "ns/b", [record(2, cost_usd=D("2"))], [DASH.encoded])
    [status] = await budget_status(engine, "2026-11")
    assert (status.key, status.provider, status.month) == (DASH, "dashscope", "2026-11")
    assert (status.spent_usd, status.reserved_usd, status.remaining_usd) == (
        D("3.5"),
        D("1.5"),
        D(5),
    )
    assert status.utilisation == D("0.5")
    assert status.holders == 1  # ns/b spent its whole slice
    assert await budget_status(engine, "2026-12") == []
    # One budget's figures, or one namespace's budgets: never another namespace's.
    assert await budget_status(engine, "2026-11", budget=DASH) == [status]
    assert await budget_status(engine, "2026-11", budget=key("dash", "other")) == []
    assert await budget_status(engine, "2026-11", namespace="other") == []


async def test_spend_breakdown_per_namespace_route_provider_model(engine: AsyncEngine) -> None:
    rows = [
        record(1, namespace="a", route="r1", cost_usd=D("0.1")),
        record(2, namespace="a", route="r1", cost_usd=D("0.2")),
        record(3, namespace="b", route="r2", model="qwen-max", cost_usd=D("1")),
    ]
    async with engine.connect() as conn:  # as the owner: rows of two namespaces
        await conn.execute(LEDGER.insert(), [row.as_params() for row in rows])
    breakdown = await spend_breakdown(engine, "2026-11")
    assert [(r.namespace, r.route, r.model, r.requests, r.cost_usd) for r in breakdown] == [
        ("a", "r1", "qwen-plus", 2, D("0.3")),
        ("b", "r2", "qwen-max", 1, D(1)),
    ]


def arm_rows() -> list[LedgerRecord]:
    rows = []
    for i in range(40):  # stable: latencies 100..139, 2 errors, 1 refusal
        status = Status.ERROR if i in (3, 7) else Status.REFUSED if i == 9 else Status.OK
        rows.append(record(i, latency_ms=100 + i, status=status, cost_usd=D("0.01")))
    for i in range(40, 60):  # candidate: 20 requests, 5 errors, latencies 1000..1019
        status = Status.ERROR if i % 4 == 0 else Status.OK
        rows.append(
            record(i, arm=Arm.CANDIDATE, latency_ms=960 + i, status=status, cost_usd=D("0.05"))
        )
    rows.append(record(99, created_at=BASE_TIME - timedelta(days=2), cost_usd=D(5)))  # too old
    return rows


async def test_arm_stats_on_postgres_and_sqlite_agree(engine: AsyncEngine, tmp_path: Path) -> None:
    async with engine.connect() as conn:
        await write_rows(conn, "ns/x", arm_rows(), [""] * 61)
    async with LedgerStore(sqlite_url(tmp_path)) as store:
        for row in arm_rows():
            store.append(row)
    since = BASE_TIME - timedelta(hours=1)
    for source in (engine, sqlite_url(tmp_path)):
        stats = await arm_stats(source, "rag-api", since)
        stable, candidate = stats["stable"], stats["candidate"]
        assert (stable.requests, stable.errors, stable.cost_usd) == (39, 2, D("0.39"))
        # 37 successes 100..139 without 103, 107, 109: rank ceil(0.95 * 37) = 36 -> 138.
        assert stable.p95_latency_ms == 138
        assert (candidate.requests, candidate.errors, candidate.error_rate) == (20, 5, 0.25)
        assert candidate.p95_latency_ms == 1019
        assert candidate.cost_usd == D("1.00")
        later = await arm_stats(source, "rag-api", BASE_TIME + timedelta(seconds=50))
        assert later["stable"].requests == 0 and later["stable"].p95_latency_ms is None
        # a route of the same name in another namespace has figures of its own
        namespace = arm_rows()[0].namespace
        mine = await arm_stats(source, "rag-api", since, namespace=namespace)
        assert mine["candidate"].requests == 20
        theirs = await arm_stats(source, "rag-api", since, namespace=namespace + "-other")
        assert theirs["stable"].requests == theirs["candidate"].requests == 0


async def test_arm_stats_query_reads_only_the_index(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(
            row[0]
            for row in await conn.execute(
                text(
                    "EXPLAIN SELECT count(*), sum(cost_usd), "
                    "percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) "
                    "FROM aegis.ledger_entries WHERE route = 'r' AND arm = 'stable' "
                    "AND created_at >= now() - interval '1 day' AND status <> 'refused'"
                )
            )
        )
    # Each month's partition answers from its copy of ix_ledger_entries_route_arm_created_at.
    scans = [line for line in plan.splitlines() if " Scan " in line]
    assert scans, plan
    assert all("Index Only Scan using " in s and "_route_arm_created_at_" in s for s in scans), plan


def test_cli_migrate_export_and_report_against_postgres(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ledger", "migrate", "--url", pg_url]) == 0
    assert f"ledger at revision {head_revision()}" in capsys.readouterr().out

    async def seed() -> None:
        await provision(pg_url, "ns", [("dash", "dashscope", "10")], migrate=False)
        engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await leases.take(
                await driver_of(conn), budget=DASH, period="2026-11", holder="ns/a", want=D(4)
            )
            rows = [record(i, cost_usd=D("0.25")) for i in range(4)]
            await write_rows(conn, "ns/a", rows, [DASH.encoded] * 4)
        await engine.dispose()

    asyncio.run(seed())
    assert main(["ledger", "export", "--url", pg_url, "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [r["cost_usd"] for r in exported] == ["0.250000"] * 4
    assert main(["ledger", "report", "--url", pg_url, "--month", "2026-11"]) == 0
    report = capsys.readouterr().out
    assert "Shared budgets" in report
    assert "dash" in report and "10.000000" in report and "3.000000" in report  # reserved
    assert "Spend by namespace and route" in report
