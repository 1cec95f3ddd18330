"""Acceptance: PostgreSQL stops for 30 s under load, then comes back.

During the outage local requests are all answered; paid requests fail closed by
their budget's policy (DashScope: ``FallbackLocal`` -> answered locally with the
fallback reason ``budget_unavailable``; OpenAI: ``Reject`` -> 503
``budget_unavailable``), and the metrics say so. Afterwards every answered or
refused request is in the ledger exactly once (the spool and the in-memory queue
are replayed, duplicates are impossible), with the cost its response announced.

``AEGIS_TEST_OUTAGE_SECONDS`` shortens the outage for a quick local run; the
acceptance run uses the default of 30 s.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from aegis.sidecar.http.server import RunningSidecar
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.conftest import Fakes
from tests.sidecar.shared_helpers import chat, fetch, pg_document, pg_sidecar, poll_until
from tests.sidecar.tenancy import provision_config

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OUTAGE_SECONDS = float(os.environ.get("AEGIS_TEST_OUTAGE_SECONDS", "30"))
KINDS = ("local", "dashscope", "openai")


@dataclass
class Seen:
    """One response: when it came, what it was, and its ledger identity."""

    kind: str
    at: float
    status: int
    request_id: str | None
    provider: str | None
    fallback: str
    code: str | None
    cost: Decimal


@dataclass
class Load:
    seen: list[Seen] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def driver(
    session: aiohttp.ClientSession, running: RunningSidecar, kind: str, load: Load, stop: float
) -> None:
    while time.monotonic() < stop:
        try:
            status, headers, payload = await chat(
                session, running, batch=kind == "dashscope", critical=kind == "openai"
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            load.failures.append(f"{kind}: {exc!r}")
            continue
        code = payload.get("error", {}).get("code") if status != 200 else None
        load.seen.append(
            Seen(
                kind,
                time.monotonic(),
                status,
                headers.get("X-Aegis-Request-Id"),
                headers.get("X-Aegis-Provider"),
                headers.get("X-Aegis-Fallback", ""),
                code,
                Decimal(headers.get("X-Aegis-Cost-USD", "0")),
            )
        )
        await asyncio.sleep(0.01)


async def scrape(running: RunningSidecar, session: aiohttp.ClientSession) -> str:
    async with session.get(f"http://127.0.0.1:{running.metrics_port}/metrics") as response:
        return await response.text()


async def test_outage_loses_nothing_and_fails_closed(
    fakes: Fakes,
    postgres: PostgresServer,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document = pg_document(fakes, pg_url, limit="50", openai_limit="50")
    await provision_config(pg_url, document)
    load = Load()
    async with (
        pg_sidecar(document, tmp_path, monkeypatch, "pod-outage") as running,
        aiohttp.ClientSession() as session,
    ):
        start = time.monotonic()
        down_at = start + 3.0
        up_at = down_at + OUTAGE_SECONDS
        stop = up_at + 8.0
        drivers = [
            asyncio.create_task(driver(session, running, kind, load, stop))
            for kind in KINDS
            for _ in range(4)
        ]
        await asyncio.sleep(down_at - time.monotonic())
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(min(3.0, OUTAGE_SECONDS / 2))
        during = await scrape(running, session)
        await asyncio.sleep(up_at - time.monotonic())
        await asyncio.to_thread(postgres.start)
        await asyncio.gather(*drivers)
        after = await scrape(running, session)
        await poll_until(lambda: not running.runtime.ledger.pending, within=30)
        store = running.runtime.ledger

    assert not load.failures, load.failures[:5]
    assert "aegis_budget_available 0.0" in during
    assert "aegis_budget_available 1.0" in after
    assert store.rows_dropped == 0

    # Requests well inside the outage (the sidecar notices within one flush).
    inside = [s for s in load.seen if down_at + 1.0 < s.at < up_at]
    by_kind = Counter(s.kind for s in inside)
    assert min(by_kind[k] for k in KINDS) > 10, by_kind
    for s in inside:
        if s.kind == "local":
            assert (s.status, s.provider) == (200, "local")
        elif s.kind == "dashscope":  # FallbackLocal: served locally, reason visible
            assert (s.status, s.provider) == (200, "local"), s
            assert "dashscope:budget_unavailable" in s.fallback, s
        else:  # Reject: refused, fail closed
            assert (s.status, s.code) == (503, "budget_unavailable"), s
    # Paid providers serve again once the database is back.
    tail = [s for s in load.seen if s.at > up_at + 5.0]
    assert {s.provider for s in tail if s.kind == "dashscope"} == {"dashscope"}
    assert {s.provider for s in tail if s.kind == "openai"} == {"openai"}

    # Nothing lost, nothing duplicated: one row per response that carried an id.
    rows = await fetch(pg_url, "SELECT request_id, status, cost_usd FROM aegis.ledger_entries")
    ledger = {rid: (status, cost) for rid, status, cost in rows}
    assert len(ledger) == len(rows)
    ids = [s.request_id for s in load.seen]
    assert None not in ids
    assert set(ids) == set(ledger) and len(ids) == len(ledger)
    for s in load.seen:
        status, cost = ledger[s.request_id]
        assert status == ("ok" if s.status == 200 else "refused"), s
        assert cost == s.cost, s
    [(overdraft,)] = await fetch(
        pg_url, "SELECT coalesce(sum(overdraft_usd), 0) FROM aegis.budget_periods"
    )
    assert overdraft == 0
    print(f"responses {len(ids)}, during outage {dict(by_kind)}")
