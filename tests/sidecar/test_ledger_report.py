"""Read side: aggregation, budget utilisation, CSV/JSON export round trips, report."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aegis.sidecar.ledger.db import LedgerUnavailableError
from aegis.sidecar.ledger.models import COLUMNS, LedgerRecord, Status
from aegis.sidecar.ledger.report import budget_usage, export, report, usage
from aegis.sidecar.ledger.store import LedgerStore
from tests.sidecar.ledger_helpers import budget, record, sqlite_url

D0 = Decimal(0)
INT_FIELDS = {"tokens_in", "tokens_out", "latency_ms", "ttft_ms", "http_status", "attempts"}


def sample() -> list[LedgerRecord]:
    rows = [
        record(i, latency_ms=i + 1, cost_usd=Decimal("0.010001"), ttft_ms=i if i % 2 else None)
        for i in range(100)  # dashscope/qwen-plus, 2026-11, latencies 1..100
    ]
    rows += [
        record(100, provider="openai", model="gpt-4o", cost_usd=Decimal("1.25")),
        record(101, provider="openai", model="gpt-4o", status=Status.ERROR, http_status=502,
               cost_usd=Decimal(0), fallback_reason="upstream_5xx", attempts=2),
        record(102, provider="openai", model="gpt-4o", status=Status.REFUSED, http_status=429,
               cost_usd=Decimal(0), rule=None, arm="candidate"),
        record(103, provider="local", model="gemma3:4b", data_class="pii", period="2026-10",
               created_at=datetime(2026, 10, 31, 23, 59, tzinfo=UTC), cost_usd=Decimal(0)),
        record(104, provider="openai", model="gpt-4o-mini", period="2026-10",
               created_at=datetime(2026, 10, 15, tzinfo=UTC), cost_usd=Decimal("79.5")),
    ]  # fmt: skip
    return rows


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[str]:
    url = sqlite_url(tmp_path)
    async with LedgerStore(url) as store:
        for row in sample():
            store.append(row)
    yield url


def parse(entry: dict[str, Any]) -> LedgerRecord:
    """Rebuild a record from an export row (CSV gives strings, JSON gives typed values)."""
    values: dict[str, Any] = {}
    for name in COLUMNS:
        value = entry[name]
        if value in ("", None):
            values[name] = None
        elif name in INT_FIELDS:
            values[name] = int(value)
        elif name == "cost_usd":
            assert isinstance(value, str)  # never a float
            values[name] = Decimal(value)
        elif name == "created_at":
            values[name] = datetime.fromisoformat(value)
        else:
            values[name] = value
    return LedgerRecord(**values)


def normalised(rows: list[LedgerRecord]) -> list[dict[str, Any]]:
    return sorted((r.as_params() for r in rows), key=lambda r: (r["created_at"], r["request_id"]))


async def test_csv_export_round_trip(ledger: str) -> None:
    out = io.StringIO()
    assert await export(ledger, "csv", out=out) == 105
    reader = csv.DictReader(io.StringIO(out.getvalue()))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    rows = [parse(r) for r in reader]
    assert [r.as_params() for r in rows] == normalised(sample())
    assert "prompt" not in out.getvalue().splitlines()[0]


async def test_json_export_round_trip_keeps_money_exact(ledger: str) -> None:
    out = io.StringIO()
    assert await export(ledger, "json", out=out) == 105
    data = json.loads(out.getvalue())
    assert [d["cost_usd"] for d in data[:3]] == ["79.500000", "0.000000", "0.010001"]
    rows = [parse(r) for r in data]
    assert [r.as_params() for r in rows] == normalised(sample())
    assert sum(r.cost_usd for r in rows) == Decimal("81.750100")


async def test_export_of_one_month(ledger: str) -> None:
    out = io.StringIO()
    assert await export(ledger, "json", month="2026-10", out=out) == 2
    assert {r["request_id"] for r in json.loads(out.getvalue())} == {"req-000103", "req-000104"}
    empty = io.StringIO()
    assert await export(ledger, "json", month="2025-01", out=empty) == 0
    assert json.loads(empty.getvalue()) == []
    with pytest.raises(ValueError, match="format"):
        await export(ledger, "xml", out=io.StringIO())  # type: ignore[arg-type]


async def test_usage_aggregates_by_month_provider_and_model(ledger: str) -> None:
    rows = {(r.month, r.provider, r.model): r for r in await usage(ledger)}
    assert list(rows) == [
        ("2026-10", "local", "gemma3:4b"),
        ("2026-10", "openai", "gpt-4o-mini"),
        ("2026-11", "dashscope", "qwen-plus"),
        ("2026-11", "openai", "gpt-4o"),
    ]
    qwen = rows[("2026-11", "dashscope", "qwen-plus")]
    assert qwen.requests == 100
    assert qwen.cost_usd == Decimal("1.000100")
    assert qwen.tokens_in == sum(100 + i for i in range(100))
    assert qwen.tokens_out == sum(20 + i for i in range(100))
    assert qwen.p95_latency_ms == 95  # nearest rank of 1..100
    gpt = rows[("2026-11", "openai", "gpt-4o")]
    assert (gpt.requests, gpt.errors, gpt.refused) == (3, 1, 1)
    assert gpt.cost_usd == Decimal("1.25")
    assert gpt.p95_latency_ms == 200  # only the successful request counts
    assert [r.month for r in await usage(ledger, "2026-10")] == ["2026-10", "2026-10"]


async def test_budget_usage(ledger: str) -> None:
    budgets = [budget("openai-monthly", "openai", "80"), budget("dash", "dashscope", "120")]
    rows = {(b.budget, b.month): b for b in await budget_usage(ledger, budgets)}
    october = rows[("openai-monthly", "2026-10")]
    assert october.spent_usd == Decimal("79.5")
    assert october.remaining_usd == Decimal("0.5")
    assert october.utilisation == Decimal("0.99375")
    assert not october.exceeded
    assert rows[("openai-monthly", "2026-11")].spent_usd == Decimal("1.25")
    assert ("dash", "2026-10") not in rows
    only = await budget_usage(ledger, budgets, "2026-09")
    assert [(b.budget, b.spent_usd) for b in only] == [("openai-monthly", D0), ("dash", D0)]


async def test_report_renders_aligned_tables(ledger: str) -> None:
    budgets = [
        budget("openai-monthly", "openai", "80"),
        budget("tiny", "openai", "1"),
        budget("free", "openai", "0"),
    ]
    text = await report(ledger, budgets)
    lines = text.splitlines()
    assert lines[0].startswith("Aegis ledger")
    header = next(line for line in lines if re.match(r"MONTH\s+NAMESPACE\s+PROVIDER", line))
    table = lines[lines.index(header) : lines.index(header) + 7]
    assert table[1].replace(" ", "").strip("-") == ""  # the rule under the header
    # right-aligned numeric columns end at the same offset on every line
    cost_end = header.index("COST USD") + len("COST USD")
    for line in table[2:]:
        assert re.match(r"[\d,]+\.\d{6}$", line[:cost_end].split()[-1])
    assert "total" in table[-1]
    assert "81.750100" in table[-1]
    assert "1.000100" in text
    assert "gemma3:4b" in text
    assert re.search(
        r"2026-10\s+openai-monthly\s+openai\s+80\.000000\s+79\.500000\s+0\.500000\s+99\.4%", text
    )
    assert re.search(
        r"2026-11\s+tiny\s+openai\s+1\.000000\s+1\.250000\s+0\.000000\s+125\.0%\s+EXCEEDED", text
    )
    assert re.search(r"free\s+openai\s+0\.000000\s+\S+\s+0\.000000\s+n/a", text)


async def test_report_of_an_empty_month(ledger: str) -> None:
    text = await report(ledger, [budget("b", "openai", "80")], month="2030-01")
    assert "(no requests recorded)" in text
    assert re.search(r"2030-01\s+b\s+openai\s+80\.000000\s+0\.000000\s+80\.000000\s+0\.0%", text)


async def test_current_month_for_a_budget_without_rows(ledger: str) -> None:
    rows = await budget_usage(
        ledger,
        [budget("auckland", "anthropic", "5", timezone="Pacific/Auckland")],
        now=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),  # already December in Auckland
    )
    assert [(r.month, r.spent_usd) for r in rows] == [("2026-12", D0)]


async def test_reading_a_missing_sqlite_ledger_does_not_create_it(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path, "nope.db")
    with pytest.raises(LedgerUnavailableError, match="no ledger database"):
        await report(url)
    with pytest.raises(LedgerUnavailableError):
        await export(url, "csv", out=io.StringIO())
    assert not (tmp_path / "nope.db").exists()


async def test_usage_and_budgets_never_mix_namespaces(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    async with LedgerStore(url) as store:
        store.append(record(1, namespace="team-a", cost_usd=Decimal("1")))
        store.append(record(2, namespace="team-b", cost_usd=Decimal("7")))
    rows = await usage(url, "2026-11")
    assert [(r.namespace, r.cost_usd) for r in rows] == [
        ("team-a", Decimal(1)),
        ("team-b", Decimal(7)),
    ]
    dash = [budget("dash", "dashscope", "5")]
    [mine] = await budget_usage(url, dash, "2026-11", namespace="team-a")
    assert (mine.spent_usd, mine.exceeded) == (Decimal(1), False)
    text = await report(url, dash, "2026-11", namespace="team-a")
    assert re.search(r"2026-11\s+dash\s+dashscope\s+5\.000000\s+1\.000000", text)
