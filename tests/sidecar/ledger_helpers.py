"""Shared helpers for the ledger and budget tests (not a conftest: tests/conftest.py
belongs to the test-bed helper)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aegis.sidecar.contract import BudgetSpec, decode
from aegis.sidecar.ledger.models import Arm, LedgerRecord, Status

BASE_TIME = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def sqlite_url(tmp_path: Path, name: str = "ledger.db") -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


def record(i: int, **overrides: Any) -> LedgerRecord:
    """A plausible ledger row; ``i`` makes the request id and time unique."""
    values: dict[str, Any] = {
        "request_id": f"req-{i:06d}",
        "created_at": BASE_TIME + timedelta(seconds=i),
        "period": "2026-11",
        "namespace": "ns",  # holders in the lease tests are ns/<pod>
        "pod": "rag-api-7d9f-abcde",
        "route": "rag-api",
        "rule": "batch",
        "arm": Arm.STABLE,
        "provider": "dashscope",
        "model": "qwen-plus",
        "data_class": "internal",
        "tokens_in": 100 + i,
        "tokens_out": 20 + i,
        "cost_usd": Decimal("0.000123"),
        "latency_ms": 100 + i,
        "ttft_ms": None,
        "status": Status.OK,
        "http_status": 200,
        "fallback_reason": None,
        "attempts": 1,
    }
    values.update(overrides)
    return LedgerRecord(**values)


def budget(
    name: str, provider: str, limit: str, timezone: str = "UTC", on_exceeded: str = "FallbackLocal"
) -> BudgetSpec:
    return decode(
        BudgetSpec,
        {
            "name": name,
            "provider": provider,
            "limitUSD": limit,
            "timezone": timezone,
            "onExceeded": on_exceeded,
        },
    )
