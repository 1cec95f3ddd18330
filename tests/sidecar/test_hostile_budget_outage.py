"""A FallbackLocal budget whose shared ledger is unreachable, on a route with no
local provider: 503 ``budget_unavailable`` (an outage), never 429
``budget_exceeded`` (which says the money ran out, and would fire the wrong alerts
and tell the client to spend less)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.controlplane.postgres import PostgresServer
from tests.sidecar.conftest import Fakes
from tests.sidecar.shared_helpers import chat, pg_document, pg_sidecar
from tests.sidecar.tenancy import provision_config

pytestmark = [pytest.mark.postgres]


def paid_only(document: dict[str, Any]) -> dict[str, Any]:
    """DashScope alone (its FallbackLocal budget has no local provider to fall to)."""
    document["providers"] = [p for p in document["providers"] if p["name"] == "dashscope"]
    document["rules"] = []
    document["default"] = {"provider": "dashscope"}
    document["fallback"] = []
    document["privacy"] = {"localOnly": []}
    return document


async def test_fallback_local_without_local_and_without_ledger_is_503(
    fakes: Fakes,
    postgres: PostgresServer,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document = paid_only(pg_document(fakes, pg_url, limit="50", on_exceeded="FallbackLocal"))
    await provision_config(pg_url, document)
    async with (
        pg_sidecar(document, tmp_path, monkeypatch, "pod-budget-outage") as running,
        aiohttp.ClientSession() as session,
    ):
        status, headers, _ = await chat(session, running)
        assert (status, headers["X-Aegis-Provider"]) == (200, "dashscope")
        postgres.stop()
        answers: list[tuple[int, dict[str, Any]]] = []
        # The sidecar notices the outage on its next lease or ledger write (each
        # answered request makes one); until then its lease may cover a few more.
        async with asyncio.timeout(90):
            while not answers or answers[-1][0] == 200:
                status, _, payload = await chat(session, running)
                answers.append((status, payload))
        status, payload = answers[-1]
        assert status == 503, payload
        assert payload["error"]["code"] == "budget_unavailable"
        assert "no local provider can serve it instead" in payload["error"]["message"]
        assert all(s in (200, 503) for s, _ in answers)
        assert running.runtime.budgets.outstanding == 0
