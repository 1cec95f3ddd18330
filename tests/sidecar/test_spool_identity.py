"""Acceptance: a spool belongs to the ledger it was written for.

Real sidecar processes and a real PostgreSQL with two ledger databases, A and B.
A sidecar serves paid requests on A while A's ledger table is locked (its rows
reach the spool, not the table) and is SIGKILLed; restarted under the same pod
name and spool against B (a new, empty ledger), it must write none of A's rows to
B and charge nothing for them there: they are kept aside and reported (log,
``aegis ledger spool``). B's own rows are then left in the spool the same way, and
the sidecar is killed and pointed at A again: A gets every row it answered, exactly
once, without overdraft, and B's rows are now the ones kept aside.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml

from aegis.sidecar.commands import run_spool
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.fleet import Fleet, wait_gone
from tests.sidecar.shared_helpers import fetch, money, poll_until
from tests.sidecar.tenancy import provision

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

POD = "pod-0"
LIMIT = "50"


def config(fleet: Fleet, url: str) -> dict[str, Any]:
    return {
        "identity": {"route": "rag-api", "namespace": "ns"},
        "providers": [
            {
                "name": "local",
                "type": "ollama",
                "baseURL": fleet.url("ollama"),
                "models": {"default": "gemma3:4b"},
            },
            {
                "name": "dashscope",
                "type": "dashscope",
                "baseURL": fleet.url("dashscope") + "/compatible-mode/v1",
                "apiKeyEnv": "DASHSCOPE_API_KEY",
                "models": {"default": "qwen-plus"},
                "maxRetries": 0,
                "pricing": {"qwen-plus": {"inputPer1M": "100", "outputPer1M": "300"}},
            },
        ],
        "rules": [
            {"name": "batch", "match": {"minBatchSize": 11}, "to": {"provider": "dashscope"}}
        ],
        "default": {"provider": "local"},
        "fallback": ["local"],
        "budgets": [{"name": "dash", "provider": "dashscope", "limitUSD": LIMIT}],
        "ledger": {"url": url},
    }


async def paid_requests(fleet: Fleet, count: int) -> dict[str, Decimal]:
    """``count`` answered paid requests: request id -> announced cost."""
    answered: dict[str, Decimal] = {}
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            body = {
                "model": "auto",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": f"question {i} " * 5}],
            }
            async with session.post(
                fleet.url(POD) + "/v1/chat/completions",
                json=body,
                headers={"X-Aegis-Batch-Size": "50"},
            ) as response:
                await response.read()
                assert response.status == 200
                assert response.headers["X-Aegis-Provider"] == "dashscope"
                cost = Decimal(response.headers["X-Aegis-Cost-USD"])
                assert cost > 0
                answered[response.headers["X-Aegis-Request-Id"]] = cost
    return answered


@asynccontextmanager
async def ledger_table_locked(url: str) -> AsyncIterator[None]:
    """Inserts into the ledger wait (leases go on): a batch under way when the sidecar
    is killed never commits, as the ledger's backends are then terminated."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("BEGIN; LOCK TABLE aegis.ledger_entries IN EXCLUSIVE MODE")
        yield
    finally:
        connection.terminate()  # its session may be gone already (kill_and_cut)


async def kill_and_cut(fleet: Fleet, url: str) -> None:
    """SIGKILL the sidecar, then end every session on its ledger (the lock's too)."""
    fleet.kill(POD)
    await wait_gone(fleet.pids.pop(POD), within=30)
    await fetch(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )


async def ids(url: str) -> set[str]:
    return {r for (r,) in await fetch(url, "SELECT request_id FROM aegis.ledger_entries")}


async def until_ids(url: str, expected: set[str], *, within: float) -> None:
    """Poll the ledger (deadline ``within`` seconds) until it holds exactly ``expected``."""
    async with asyncio.timeout(within):
        while True:
            if await ids(url) == expected:
                return
            await asyncio.sleep(0.1)  # poll interval; the deadline is the timeout


async def overdraft(url: str) -> Decimal:
    return await money(url, "SELECT sum(overdraft_usd) FROM aegis.budget_periods")


def spool_report(directory: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert run_spool(config=None, url=None, directory=directory, as_json=True) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


async def test_a_spool_replays_only_into_its_own_ledger(
    request: pytest.FixtureRequest,
    postgres: PostgresServer,
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url_a = pg_url
    direct_b = postgres.create_database()
    # B is reached the way A is: directly, or through PgBouncer.
    pooled = f":{postgres.port}/" not in url_a
    url_b = request.getfixturevalue("pgbouncer").via(direct_b) if pooled else direct_b
    try:
        for url in (url_a, url_b):
            await provision(url, "ns", [("dash", "dashscope", LIMIT)])
        spool = tmp_path / "spool"
        env = {"DASHSCOPE_API_KEY": "sk-test", "AEGIS_SPOOL_DIR": str(spool), "POD_NAME": POD}
        async with Fleet(tmp_path, env) as fleet:
            await asyncio.gather(
                fleet.spawn("dashscope", "dashscope"), fleet.spawn("ollama", "ollama")
            )
            configs = {}
            for name, url in (("a", url_a), ("b", url_b)):
                configs[name] = tmp_path / f"config-{name}.yaml"
                configs[name].write_text(yaml.safe_dump(config(fleet, url)))

            # Life 1, ledger A: answered, spooled, not in A's table, then killed.
            await fleet.spawn(POD, "sidecar", config=configs["a"])
            async with ledger_table_locked(url_a):
                answered_a = await paid_requests(fleet, 30)
                await kill_and_cut(fleet, url_a)
            assert await ids(url_a) == set()

            # Life 2, ledger B: A's rows are kept aside and reported, never charged.
            await fleet.spawn(POD, "sidecar", config=configs["b"])
            written_b = await paid_requests(fleet, 5)
            await poll_until(lambda: "kept aside" in fleet.log(POD), within=30)
            report = spool_report(spool / "ns_pod-0", capsys)
            [held_a] = report["held"]
            assert held_a["rows"] == len(answered_a)
            assert Decimal(held_a["cost_usd"]) == sum(answered_a.values())
            assert held_a["target"].endswith(url_a.rsplit("/", 1)[1])
            await until_ids(url_b, set(written_b), within=30)  # B's first rows written
            async with ledger_table_locked(url_b):
                spooled_b = await paid_requests(fleet, 7)
                await kill_and_cut(fleet, url_b)
            assert await ids(url_b) == set(written_b)  # none of A's
            assert await overdraft(url_b) == 0

            # Life 3, ledger A again: A's rows arrive exactly once; B's are held now.
            await fleet.spawn(POD, "sidecar", config=configs["a"])
            answered_a |= await paid_requests(fleet, 3)
            await until_ids(url_a, set(answered_a), within=60)  # replayed and written
            report = spool_report(spool / "ns_pod-0", capsys)
            [held_b] = report["held"]
            # With the spooled rows, some B had committed (a replay there skips those).
            assert len(spooled_b) <= held_b["rows"] <= len(spooled_b) + len(written_b)
            assert held_b["target"].endswith(url_b.rsplit("/", 1)[1])
            await fleet.stop(POD)  # graceful: leases returned and closed
            log = fleet.log(POD)

        assert "replaying 30 held rows" in log
        rows = await fetch(url_a, "SELECT request_id, cost_usd FROM aegis.ledger_entries")
        assert len(rows) == len(answered_a)
        assert {rid: Decimal(cost) for rid, cost in rows} == answered_a
        assert await overdraft(url_a) == 0
        settled = await money(url_a, "SELECT sum(settled_usd) FROM aegis.budget_leases")
        assert settled == sum(answered_a.values())
        assert await ids(url_b) == set(written_b)
        assert await overdraft(url_b) == 0
    finally:
        postgres.drop_database(direct_b.rsplit("/", 1)[1])
