"""A real sidecar on the shared PostgreSQL ledger: leases, spool, headers, metrics."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from tests.sidecar.conftest import Fakes
from tests.sidecar.shared_helpers import chat, fetch, money, pg_document, pg_sidecar, sample
from tests.sidecar.tenancy import provision_config

pytestmark = pytest.mark.postgres


async def test_paid_requests_spend_a_lease_and_shutdown_returns_the_rest(
    fakes: Fakes, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = pg_document(fakes, pg_url, limit="5")
    await provision_config(pg_url, document)
    charged = Decimal(0)
    async with (
        pg_sidecar(document, tmp_path, monkeypatch, "pod-a") as running,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(20):
            status, headers, _ = await chat(session, running, batch=True)
            assert status == 200
            assert headers["X-Aegis-Provider"] == "dashscope"
            charged += Decimal(headers["X-Aegis-Cost-USD"])
        leases = running.runtime.leases
        assert leases is not None
        # One take for the first request, no statement per request.
        assert leases.statements.get("take", 0) <= 2
        async with session.get(f"http://127.0.0.1:{running.metrics_port}/metrics") as response:
            metrics = await response.text()
        assert sample(metrics, "aegis_budget_available") == 1.0
        assert sample(metrics, "aegis_budget_lease_statements_total", kind="take")
    ledger = await money(pg_url, "SELECT sum(cost_usd) FROM aegis.ledger_entries")
    assert ledger == charged > 0
    [(committed, overdraft)] = await fetch(
        pg_url, "SELECT committed_usd, overdraft_usd FROM aegis.budget_periods"
    )
    [(amount, settled, state)] = await fetch(
        pg_url, "SELECT amount_usd, settled_usd, state FROM aegis.budget_leases"
    )
    # Returned on shutdown: what is committed is exactly what was spent.
    assert committed == amount == settled == charged
    assert overdraft == 0
    assert state == "closed"
