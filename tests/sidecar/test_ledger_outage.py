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
from tests.sidecar.shared_helpers import (
    chat,
    fetch,
    pg_document,
    pg_sidecar,
    poll_until,
    sample,
)
from tests.sidecar.tenancy import provision_config

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OUTAGE_SECONDS = float(os.environ.get("AEGIS_TEST_OUTAGE_SECONDS", "30"))
KINDS = ("local", "dashscope", "openai")


# Phases of the outage, as the test observed them (never guessed from the clock).
UP, STOPPING, DOWN, STARTING, BACK = range(5)


@dataclass
class Seen:
    """One response: the phases when it was sent and answered, what it was, and its
    ledger identity."""

    kind: str
    sent: int
    answered: int
    status: int
    request_id: str | None
    provider: str | None
    fallback: str
    code: str | None
    cost: Decimal


@dataclass
class Load:
    phase: int = UP
    done: bool = False
    seen: list[Seen] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def count(self, kind: str, sent: int, answered: int, provider: str | None = None) -> int:
        return sum(
            1
            for s in self.seen
            if (s.kind, s.sent, s.answered) == (kind, sent, answered)
            and provider in {None, s.provider}
        )


async def driver(
    session: aiohttp.ClientSession, running: RunningSidecar, kind: str, load: Load
) -> None:
    while not load.done:
        sent = load.phase
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
                sent,
                load.phase,
                status,
                headers.get("X-Aegis-Request-Id"),
                headers.get("X-Aegis-Provider"),
                headers.get("X-Aegis-Fallback", ""),
                code,
                Decimal(headers.get("X-Aegis-Cost-USD", "0")),
            )
        )
        await asyncio.sleep(0.01)  # deliberate pacing: a steady load, not a flood


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

        async def metric(value: float) -> bool:
            return sample(await scrape(running, session), "aegis_budget_available") == value

        drivers = [
            asyncio.create_task(driver(session, running, kind, load))
            for kind in KINDS
            for _ in range(4)
        ]
        # Every kind answered while the database is up, the paid ones by their provider.
        await poll_until(
            lambda: all(load.count(k, UP, UP, None if k == "local" else k) >= 3 for k in KINDS),
            within=60,
        )
        load.phase = STOPPING
        stopped_at = time.monotonic()
        await asyncio.to_thread(postgres.stop)
        # The sidecar notices (a failed statement or write) ...
        await poll_until(lambda: metric(0.0), within=60, every=0.1)
        load.phase = DOWN
        # ... and fails closed for enough requests of each kind, for at least the outage's
        # length (deliberate: the acceptance run keeps the database down for 30 s).
        await poll_until(
            lambda: (
                all(load.count(k, DOWN, DOWN) >= 10 for k in KINDS)
                and time.monotonic() - stopped_at >= OUTAGE_SECONDS
            ),
            within=OUTAGE_SECONDS + 120,
            every=0.1,
        )
        during = await scrape(running, session)
        load.phase = STARTING
        await asyncio.to_thread(postgres.start)
        await poll_until(lambda: metric(1.0), within=60, every=0.1)
        load.phase = BACK
        # Paid providers serve again once the database is back.
        await poll_until(
            lambda: (
                load.count("dashscope", BACK, BACK, "dashscope") >= 3
                and load.count("openai", BACK, BACK, "openai") >= 3
            ),
            within=60,
        )
        load.done = True
        await asyncio.gather(*drivers)
        after = await scrape(running, session)
        await poll_until(lambda: not running.runtime.ledger.pending, within=30)
        store = running.runtime.ledger

    assert not load.failures, load.failures[:5]
    assert sample(during, "aegis_budget_available") == 0.0
    assert sample(after, "aegis_budget_available") == 1.0
    assert store.rows_dropped == 0

    # Requests sent and answered while the sidecar knew the database was down.
    inside = [s for s in load.seen if s.sent == s.answered == DOWN]
    by_kind = Counter(s.kind for s in inside)
    for s in inside:
        if s.kind == "local":
            assert (s.status, s.provider) == (200, "local")
        elif s.kind == "dashscope":  # FallbackLocal: served locally, reason visible
            assert (s.status, s.provider) == (200, "local"), s
            assert "dashscope:budget_unavailable" in s.fallback, s
        else:  # Reject: refused, fail closed
            assert (s.status, s.code) == (503, "budget_unavailable"), s

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
