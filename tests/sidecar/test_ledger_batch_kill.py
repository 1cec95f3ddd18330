"""Acceptance: a sidecar SIGKILLed while a ledger batch is under way loses no row and
duplicates none.

A real sidecar process serves concurrent clients (paid and local requests) on a
real PostgreSQL, directly and through PgBouncer. Mid-run, inserts into the ledger
are made to wait, so that a batch is in flight (seen in ``pg_stat_activity``) while
more rows queue behind it; the sidecar is SIGKILLed there. The batch then commits
without its writer (the ambiguous case: written, never acknowledged) and the
restarted sidecar replays its spool. Every answered request has exactly one ledger
row with the cost its response announced; a row more is allowed only for a call the
kill cut off after it was settled (at most one per client), and the leases settled
exactly what the ledger holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yaml

from tests.sidecar.fleet import Fleet, wait_gone
from tests.sidecar.shared_helpers import fetch, money
from tests.sidecar.tenancy import provision
from tests.sidecar.test_spool_identity import config

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

POD = "pod-0"
CLIENTS = 12


class Load:
    def __init__(self) -> None:
        self.answered: dict[str, Decimal] = {}
        self.stop = False


async def client(session: aiohttp.ClientSession, fleet: Fleet, load: Load, index: int) -> None:
    n = 0
    while not load.stop:
        n += 1
        paid = (index + n) % 3 != 0
        body = {
            "model": "auto",
            "max_tokens": 4 + n % 7,
            "messages": [{"role": "user", "content": f"client {index} call {n} " * 3}],
        }
        headers = {"X-Aegis-Batch-Size": "50"} if paid else {}
        try:
            async with session.post(
                fleet.url(POD) + "/v1/chat/completions", json=body, headers=headers
            ) as response:
                await response.read()
                if response.status == 200:
                    rid = response.headers["X-Aegis-Request-Id"]
                    load.answered[rid] = Decimal(response.headers["X-Aegis-Cost-USD"])
        except (aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(0.05)  # killed under us: pace until the restart


async def batch_waiting(direct: str) -> bool:
    rows = await fetch(
        direct,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query LIKE '%aegis.ledger_write%'",
    )
    return bool(rows[0][0])


async def poll(check: Callable[[], bool | Awaitable[bool]], *, within: float) -> None:
    """Poll ``check`` (plain or async) until it is true (deadline ``within`` seconds)."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)  # poll interval; the deadline is the timeout


async def test_a_kill_during_a_batch_leaves_exactly_one_row_per_answer(
    pg_url: str, tmp_path: Path
) -> None:
    await provision(pg_url, "ns", [("dash", "dashscope", "50")])
    env = {
        "DASHSCOPE_API_KEY": "sk-test",
        "AEGIS_SPOOL_DIR": str(tmp_path / "spool"),
        "POD_NAME": POD,
    }
    async with Fleet(tmp_path, env) as fleet:
        await asyncio.gather(fleet.spawn("dashscope", "dashscope"), fleet.spawn("ollama", "ollama"))
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config(fleet, pg_url)))
        await fleet.spawn(POD, "sidecar", config=path)
        load = Load()
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks = [asyncio.create_task(client(session, fleet, load, i)) for i in range(CLIENTS)]
            await poll(lambda: len(load.answered) >= 200, within=120)
            locker = await asyncpg.connect(pg_url)
            try:
                await locker.execute("BEGIN; LOCK TABLE aegis.ledger_entries IN EXCLUSIVE MODE")
                await poll(lambda: batch_waiting(pg_url), within=30)
                before = len(load.answered)
                await poll(lambda: len(load.answered) >= before + 100, within=60)
                fleet.kill(POD)  # a batch waits in the database, more rows queue behind it
                await wait_gone(fleet.pids.pop(POD), within=30)
                await locker.execute("COMMIT")  # the orphaned batch commits now
            finally:
                with contextlib.suppress(Exception):
                    await locker.close()
            killed_at = len(load.answered)
            await fleet.spawn(POD, "sidecar", config=path)
            await poll(lambda: len(load.answered) >= killed_at + 100, within=120)
            load.stop = True
            await asyncio.gather(*tasks)
        await fleet.stop(POD)
        log = fleet.log(POD)

    rows = await fetch(pg_url, "SELECT request_id, cost_usd, provider FROM aegis.ledger_entries")
    ledger = {rid: Decimal(cost) for rid, cost, _ in rows}
    assert len(ledger) == len(rows)
    missing = set(load.answered) - set(ledger)
    assert not missing, f"{len(missing)} answered requests have no ledger row"
    assert all(ledger[rid] == cost for rid, cost in load.answered.items())
    assert len(ledger) - len(load.answered) <= CLIENTS  # calls the kill cut off
    assert "rows of a previous run found" in log
    spent = sum((Decimal(c) for _, c, p in rows if p == "dashscope"), Decimal(0))
    assert spent > 0
    settled = await money(pg_url, "SELECT sum(settled_usd) FROM aegis.budget_leases")
    assert settled == spent
    assert await money(pg_url, "SELECT sum(overdraft_usd) FROM aegis.budget_periods") == 0
