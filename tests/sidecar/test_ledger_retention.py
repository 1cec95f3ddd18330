"""Retention: old months exported, then dropped (PostgreSQL: their partitions; SQLite:
their rows); budget status and reports stay right; a failed export drops nothing."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aegis.operator.cli import main
from aegis.sidecar.ledger import leases
from aegis.sidecar.ledger.budget_status import budget_status, spend_breakdown
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.models import COLUMNS
from aegis.sidecar.ledger.partitions import ensure_partitions, first_kept, retention
from aegis.sidecar.ledger.report import usage
from aegis.sidecar.ledger.store import LedgerStore
from tests.sidecar.ledger_helpers import record, sqlite_url
from tests.sidecar.shared_helpers import driver_of, write_rows
from tests.sidecar.tenancy import key, provision

D = Decimal
DASH = key("dash")
NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)  # the frozen clock: keep 2 = October, November
MONTHS = {  # month -> (its first row's instant, rows, cost of each)
    "2026-08": (datetime(2026, 8, 31, 23, 59, tzinfo=UTC), 3, D("0.5")),
    "2026-09": (datetime(2026, 9, 1, tzinfo=UTC), 4, D("0.25")),
    "2026-10": (datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC), 5, D("0.1")),
    "2026-11": (datetime(2026, 11, 1, tzinfo=UTC), 6, D("0.01")),
}


def month_rows(month: str) -> list[Any]:
    at, count, cost = MONTHS[month]
    first = 1000 * int(month[5:])
    return [
        record(first + i, created_at=at + timedelta(microseconds=i), period=month, cost_usd=cost)
        for i in range(count)
    ]


def exported(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".json":
        loaded: list[dict[str, str]] = json.loads(path.read_text())
        return loaded
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    await provision(pg_url, "ns", [("dash", "dashscope", "100")])
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    await ensure_partitions(engine, 4, now=datetime(2026, 8, 10, tzinfo=UTC))
    async with engine.connect() as conn:
        for month in MONTHS:
            await leases.take(
                await driver_of(conn), budget=DASH, period=month, holder="ns/p", want=D(10)
            )
            rows = month_rows(month)
            await write_rows(conn, "ns/p", rows, [DASH.encoded] * len(rows))
    yield engine
    await engine.dispose()


async def partition_months(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'aegis.ledger_entries'::regclass ORDER BY 1"
            )
        )
        return [name for (name,) in found]


def test_the_current_month_and_the_one_before_are_always_kept() -> None:
    assert first_kept(NOW, 2) == "2026-10"
    assert first_kept(datetime(2027, 1, 1, tzinfo=UTC), 13) == "2026-01"
    with pytest.raises(ValueError, match="at least 2 months"):
        first_kept(NOW, 1)


@pytest.mark.postgres
async def test_old_partitions_are_exported_then_dropped_and_reports_stay_right(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    statuses = await budget_status(engine)
    breakdown = await spend_breakdown(engine)
    totals = [(u.month, u.requests, u.tokens_in, u.cost_usd) for u in await usage(engine)]
    assert [s.spent_usd for s in statuses] == [D("1.5"), D("1"), D("0.5"), D("0.06")]

    removed = await retention(engine, 2, tmp_path, now=NOW)
    assert [(r.month, r.rows) for r in removed] == [("2026-08", 3), ("2026-09", 4)]
    left = await partition_months(engine)  # and the months ahead of the real clock
    assert [m for m in left if m < "ledger_entries_2026_12"] == [
        "ledger_entries_2026_10",
        "ledger_entries_2026_11",
    ]
    assert "ledger_entries_default" in left
    for r in removed:
        assert r.exported == tmp_path / f"ledger-{r.month}.csv"
        rows = exported(r.exported)
        assert [row["request_id"] for row in rows] == [x.request_id for x in month_rows(r.month)]
        assert sum(D(row["cost_usd"]) for row in rows) == MONTHS[r.month][1] * MONTHS[r.month][2]
    assert sorted(os.listdir(tmp_path)) == [
        "ledger-2026-08.csv",
        "ledger-2026-09.csv",
    ]
    async with engine.connect() as conn:
        kept = await conn.execute(
            text("SELECT period, count(*) FROM aegis.ledger_entries GROUP BY 1")
        )
        assert sorted((str(p), int(n)) for p, n in kept) == [("2026-10", 5), ("2026-11", 6)]

    # Budgets and reports: as before the drop (budgets never read raw rows; the
    # summary table holds every month's totals).
    assert await budget_status(engine) == statuses
    assert await spend_breakdown(engine) == breakdown
    after = [(u.month, u.requests, u.tokens_in, u.cost_usd) for u in await usage(engine)]
    assert after == totals

    # A late replay of a removed month's rows is kept (the default partition, then a
    # partition of its own) and removed by the next run, into a new file.
    async with engine.connect() as conn:
        late = record(8999, created_at=MONTHS["2026-08"][0], period="2026-08")
        assert await write_rows(conn, "ns/p", [late], [""]) == 1
    again = await retention(engine, 2, tmp_path, now=NOW)
    assert [(r.month, r.rows, r.exported) for r in again] == [
        ("2026-08", 1, tmp_path / "ledger-2026-08.1.csv")
    ]
    assert await retention(engine, 2, tmp_path, now=NOW) == []


@pytest.mark.postgres
async def test_a_failed_export_drops_nothing(engine: AsyncEngine, tmp_path: Path) -> None:
    (tmp_path / "ledger-2026-08.json.partial").mkdir()  # the export cannot be written
    with pytest.raises(IsADirectoryError):
        await retention(engine, 3, tmp_path, fmt="json", now=NOW)
    async with engine.connect() as conn:
        august = await conn.scalar(text("SELECT count(*) FROM aegis.ledger_entries_2026_08"))
    assert august == 3  # still there (detached: the next run exports it first)
    (tmp_path / "ledger-2026-08.json.partial").rmdir()
    removed = await retention(engine, 3, tmp_path, fmt="json", now=NOW)
    assert [(r.month, r.rows) for r in removed] == [("2026-08", 3)]
    assert len(exported(tmp_path / "ledger-2026-08.json")) == 3
    assert "ledger_entries_2026_09" in await partition_months(engine)


async def test_sqlite_deletes_old_months_after_exporting_them(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    async with LedgerStore(url) as store:
        for month in MONTHS:
            for row in month_rows(month):
                store.append(row)
    async with LedgerStore(url) as store:
        september = await store.spent("dashscope", "2026-09")
    assert september > 0
    breakdown = await spend_breakdown(url)
    out = tmp_path / "exports"
    removed = await retention(url, 2, out, now=NOW)
    assert [(r.month, r.rows) for r in removed] == [("2026-08", 3), ("2026-09", 4)]
    assert len(exported(out / "ledger-2026-09.csv")) == 4
    assert sorted((u.month, u.requests) for u in await usage(url)) == [
        ("2026-08", 3),
        ("2026-09", 4),
        ("2026-10", 5),
        ("2026-11", 6),
    ]
    assert await spend_breakdown(url) == breakdown
    async with LedgerStore(url) as store:  # raw rows gone, the month's spend is in the summary
        assert await store.spent("dashscope", "2026-09") == september
        assert await store.spent("dashscope", "2026-10") == D("0.5")
    assert await retention(url, 2, out, now=NOW) == []


def test_cli_refuses_unsafe_retention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = sqlite_url(tmp_path)
    args = ["ledger", "retention", "--url", url]
    assert main([*args, "--keep-months", "1", "--no-export"]) == 2
    assert "keep at least 2 months" in capsys.readouterr().err
    assert main([*args, "--keep-months", "13"]) == 2
    assert "--export-dir DIR" in capsys.readouterr().err
