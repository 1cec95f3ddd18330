"""Acceptance: many sidecar processes spend one small budget, some are SIGKILLed.

Sixteen real sidecar processes (forked by the zygote: the code of ``aegis
sidecar``), a fake DashScope and a fake Ollama process, one PostgreSQL. Twenty
concurrent clients per sidecar send batch requests (routed to DashScope) with
random prompt sizes and ``max_tokens``, so costs are random. The budget runs out
mid-run; from then on requests fall back to the local provider. Four sidecars are
SIGKILLed under load and restarted on the same pod name and spool, as a kubelet
would restart the container.

Checked afterwards:
- settled spend (the ledger's sum) <= the limit, and no overdraft was booked;
- every answered request is in the ledger with the cost its response announced,
  to the micro-dollar; sidecars that were never killed have exactly one row per
  answered request; a killed one may have a few more (rows of calls that were
  settled and spooled, but whose answer the kill cut off), never fewer;
- the budget rows agree with the ledger: sum of lease settlements == ledger sum, and
  committed money == that plus what the killed lives may have had in flight (kept
  charged as unknown outcome) once every lease is closed.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.sidecar.fleet import Fleet, wait_gone
from tests.sidecar.shared_helpers import fetch, money, poll_until
from tests.sidecar.tenancy import provision

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SIDECARS = 16
CLIENTS = 20
KILLED = ("pod-01", "pod-05", "pod-09", "pod-13")
LIMIT = Decimal("8")
KILL_AFTER_PAID = 300  # answered DashScope requests before the kills: mid-run, by count


UNKNOWN = (
    "SELECT sum(CASE WHEN reclaimed_at IS NOT NULL THEN amount_usd - settled_usd "
    "ELSE unknown_usd END) FROM aegis.budget_leases"
)


async def spent_most(url: str) -> bool:
    """More than 90 % of the limit is in the ledger or kept for calls of unknown outcome
    (the killed sidecars' calls in flight): the budget has run out."""
    spent = await money(
        url, "SELECT sum(cost_usd) FROM aegis.ledger_entries WHERE provider = 'dashscope'"
    )
    return spent + await money(url, UNKNOWN) > LIMIT * Decimal("0.9")


def config(fakes: Fleet, url: str) -> dict[str, Any]:
    return {
        "identity": {"route": "rag-api", "namespace": "load"},
        "providers": [
            {
                "name": "local",
                "type": "ollama",
                "baseURL": fakes.url("ollama"),
                "models": {"default": "gemma3:4b"},
            },
            {
                "name": "dashscope",
                "type": "dashscope",
                "baseURL": fakes.url("dashscope") + "/compatible-mode/v1",
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
        "budgets": [{"name": "dash", "provider": "dashscope", "limitUSD": str(LIMIT)}],
        "ledger": {"url": url},
    }


class Tally:
    """What the clients saw: answered requests by pod, and errors."""

    def __init__(self) -> None:
        self.answered: dict[str, dict[str, tuple[str, Decimal]]] = defaultdict(dict)
        self.errors: dict[str, int] = defaultdict(int)
        self.restarted: set[str] = set()
        self.after_restart: dict[str, int] = defaultdict(int)  # answered by a new life
        self.done = False

    def paid(self) -> int:
        return sum(p == "dashscope" for a in self.answered.values() for p, _ in a.values())


async def client(
    session: aiohttp.ClientSession, fleet: Fleet, pod: str, tally: Tally, *, seed: int
) -> None:
    rng = random.Random(seed)
    while not tally.done:
        body = {
            "model": "auto",
            "max_tokens": rng.randint(1, 16),
            "messages": [{"role": "user", "content": " ".join(["w"] * rng.randint(1, 40))}],
        }
        restarted = pod in tally.restarted
        try:
            async with session.post(
                fleet.url(pod) + "/v1/chat/completions",
                json=body,
                headers={"X-Aegis-Batch-Size": "50"},
            ) as response:
                await response.read()
                if response.status != 200:
                    tally.errors[pod] += 1
                    continue
                rid = response.headers["X-Aegis-Request-Id"]
                cost = Decimal(response.headers.get("X-Aegis-Cost-USD", "0"))
                tally.answered[pod][rid] = (response.headers["X-Aegis-Provider"], cost)
                tally.after_restart[pod] += restarted
        except (aiohttp.ClientError, TimeoutError):
            tally.errors[pod] += 1  # killed under us: wait for the restart
            await asyncio.sleep(0.05)  # deliberate pacing: no busy loop while it is down


async def test_many_sidecars_killed_and_restarted_never_overspend(
    pg_url: str, tmp_path: Path
) -> None:
    await provision(pg_url, "load", [("dash", "dashscope", str(LIMIT))])
    env = {
        "DASHSCOPE_API_KEY": "sk-test",
        "AEGIS_SPOOL_DIR": str(tmp_path / "spool"),
        "AEGIS_LEASE_HORIZON": "2",
    }
    async with Fleet(tmp_path, env) as fleet:
        await asyncio.gather(fleet.spawn("dashscope", "dashscope"), fleet.spawn("ollama", "ollama"))
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config(fleet, pg_url)))
        pods = [f"pod-{i:02d}" for i in range(SIDECARS)]
        await asyncio.gather(
            *(fleet.spawn(p, "sidecar", config=path, env={"POD_NAME": p}) for p in pods)
        )
        tally = Tally()
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            clients = [
                asyncio.create_task(client(session, fleet, p, tally, seed=i * 100 + j))
                for i, p in enumerate(pods)
                for j in range(CLIENTS)
            ]
            # Mid-run, counted in answered paid requests (not seconds): kill four.
            await poll_until(lambda: tally.paid() >= KILL_AFTER_PAID, within=300, every=0.05)
            for pod in KILLED:
                fleet.kill(pod)
            for pod in KILLED:
                await wait_gone(fleet.pids[pod], within=30)
            tally.restarted.update(KILLED)
            await asyncio.gather(
                *(fleet.spawn(p, "sidecar", config=path, env={"POD_NAME": p}) for p in KILLED)
            )

            # Run until the budget is spent (as the ledger says) and every restarted
            # sidecar has answered, whatever time that takes on this machine.
            async def finished() -> bool:
                restarted_answered = all(tally.after_restart[p] >= CLIENTS for p in KILLED)
                return restarted_answered and await spent_most(pg_url)

            await poll_until(finished, within=600, every=0.5)
            tally.done = True
            await asyncio.gather(*clients)
        await fleet.stop_all()  # graceful: leases returned, ledgers flushed
        logs = {p: fleet.log(p) for p in pods}

    rows = await fetch(
        pg_url, "SELECT request_id, pod, provider, cost_usd FROM aegis.ledger_entries"
    )
    ledger = {rid: (pod, provider, cost) for rid, pod, provider, cost in rows}
    assert len(ledger) == len(rows)  # request ids are unique
    answered = sum(len(a) for a in tally.answered.values())
    paid = [c for a in tally.answered.values() for p, c in a.values() if p == "dashscope"]
    assert tally.paid() >= KILL_AFTER_PAID, tally.errors
    for pod in pods:
        mine = {rid for rid, (p, _, _) in ledger.items() if p == pod}
        seen = tally.answered[pod]
        assert set(seen) <= mine, f"{pod}: answered requests missing from the ledger"
        for rid, (provider, cost) in seen.items():
            assert ledger[rid][1:] == (provider, cost), rid
        extra = len(mine) - len(seen)
        assert extra == 0 if pod not in KILLED else extra <= CLIENTS, (pod, extra)
        assert "Traceback" not in logs[pod], logs[pod][-3000:]

    spent = sum((c for _, p, c in ledger.values() if p == "dashscope"), Decimal(0))
    [(committed, overdraft, limit)] = await fetch(
        pg_url, "SELECT committed_usd, overdraft_usd, limit_usd FROM aegis.budget_periods"
    )
    [(settled, open_leases)] = await fetch(
        pg_url,
        "SELECT sum(settled_usd), count(*) FILTER (WHERE state = 'open') FROM aegis.budget_leases",
    )
    unknown = await money(pg_url, UNKNOWN)  # what the killed lives may have had in flight
    assert limit == LIMIT
    assert spent <= LIMIT
    assert spent + unknown > LIMIT * Decimal("0.9")  # little is stranded in unused slices
    assert overdraft == 0
    assert settled == spent
    assert committed == spent + unknown
    assert open_leases == 0
    assert sum(paid, Decimal(0)) <= spent  # killed pods' unanswered rows make up the rest
    # After the budget ran out, requests were answered locally instead.
    local = [p for a in tally.answered.values() for p, _ in a.values() if p == "local"]
    assert local
    print(f"answered {answered}, paid {len(paid)}, spent {spent} of {LIMIT}")
