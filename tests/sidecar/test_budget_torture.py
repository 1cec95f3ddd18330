"""Torture: three namespaces and a cluster budget, nine sidecar processes, hundreds of
clients, random costs, sidecars SIGKILLed for good and killed and restarted with
requests in flight, while every budget still has money.

Real parts: PostgreSQL with a tenant role per namespace (made as the operator makes
them, ``aegis.ensure_tenant``), budgets written through the control functions as the
operator writes them (each namespace's ``team`` budget spent by its own namespace; the
cluster budget ``all``, scope Cluster, spent by the three), nine real sidecars forked
by the zygote (three per namespace, each with its own API key, so the provider's bill
says whose call it was), one fake OpenAI process that keeps its own invoice at the
same prices the sidecars use. 270 aiohttp clients send chat requests with random
prompt sizes and ``max_tokens`` and a unique ``user`` tag each, until every budget is
spent. Mid-run (by count of paid answers, and only once the pods to kill have calls
in flight) two sidecars are SIGKILLed for good (their spools die with them, as an
``emptyDir`` with its pod) and two are SIGKILLed and restarted under the same pod
name (their spools replay, then they take over their old leases).

Asserted (inequalities and identities that hold whatever the timing):

- for every budget, the provider's invoice of the calls charged to it <= its limit,
  and <= what the ledger settled plus what it keeps charged as unknown outcome;
- every answered call is in the ledger with exactly the cost the provider billed;
  for sidecars never killed the ledger and the invoice agree call for call; a killed
  one's rows are all billed calls (its unanswered or unwritten calls are the
  difference, covered by the unknown-outcome money);
- no request that a budget refused reached the provider;
- no overdraft; once every sidecar has stopped, committed = settled + unknown.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from aegis.sidecar.contract import BudgetKey, BudgetScope
from aegis.sidecar.ledger import control
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import migrate_async
from tests.sidecar.fleet import Fleet, wait_gone
from tests.sidecar.shared_helpers import fetch, poll_until
from tests.sidecar.tenancy import tenant_url

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NAMESPACES = ("ns-a", "ns-b", "ns-c")
PODS = {ns: [f"{ns}-pod-{i}" for i in range(3)] for ns in NAMESPACES}
CLIENTS = 30  # per sidecar: 270 in all
TEAM_LIMIT = Decimal("2.5")  # each namespace's own budget
CLUSTER_LIMIT = Decimal("6")  # the three together: binds before the three team budgets
PRICE = {"inputPer1M": "100", "outputPer1M": "300"}
MODEL = "gpt-4o-mini"
GONE = ("ns-a-pod-2", "ns-b-pod-2")  # killed for good
RESTARTED = ("ns-a-pod-1", "ns-c-pod-1")  # killed and restarted (same pod name, spool)
KILL_AT_PAID = 300  # answered paid calls before the kills (about a quarter of the money)
TTL = 4  # lease TTL (s)
CALL_TIMEOUT = 5  # the sidecars' per-request deadline (s): their longest call


def pod_key(pod: str) -> str:
    return f"sk-{pod}"


def config(fakes: Fleet, ns: str, dsn: str) -> dict[str, Any]:
    return {
        "identity": {"route": "chat", "namespace": ns},
        "listen": {"limits": {"requestTimeoutSeconds": CALL_TIMEOUT}},
        "providers": [
            {
                "name": "openai",
                "type": "openai",
                "baseURL": fakes.url("openai") + "/v1",
                "apiKeyEnv": "OPENAI_API_KEY",
                "models": {"default": MODEL},
                "maxRetries": 0,
                "pricing": {MODEL: PRICE},
            }
        ],
        "default": {"provider": "openai"},
        "privacy": {"localOnly": []},  # no local provider here: everything is paid
        "budgets": [
            {"name": "team", "provider": "openai", "limitUSD": str(TEAM_LIMIT),
             "onExceeded": "Reject"},
            {"name": "all", "provider": "openai", "limitUSD": str(CLUSTER_LIMIT),
             "scope": "Cluster", "onExceeded": "Reject"},
        ],
        "ledger": {"url": dsn},
    }  # fmt: skip


async def write_budgets(url: str) -> dict[str, str]:
    """Migrate, make each namespace's tenant role (its DSN) and write the budgets as
    the operator does; returns the DSN per namespace."""
    await migrate_async(url)
    dsns = {ns: await tenant_url(url, ns) for ns in NAMESPACES}
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for ns in NAMESPACES:
                team = BudgetKey(BudgetScope.NAMESPACE, ns, "team")
                await control.set_budget(
                    connection, team, provider="openai", limit=TEAM_LIMIT, spenders=[ns]
                )
            cluster = BudgetKey(BudgetScope.CLUSTER, "", "all")
            await control.set_budget(
                connection, cluster, provider="openai", limit=CLUSTER_LIMIT, spenders=NAMESPACES
            )
    finally:
        await engine.dispose()
    return dsns


class Tally:
    """What the clients saw."""

    def __init__(self) -> None:
        self.answered: dict[str, tuple[str, str, Decimal]] = {}  # tag -> pod, rid, cost
        self.answer_ids: dict[str, str] = {}  # tag -> the provider's completion id
        self.refused: dict[str, str] = {}  # tag -> pod (a budget refused it)
        self.unknown: dict[str, str] = {}  # tag -> pod (cut off: the pod was killed)
        self.other: list[tuple[str, int, str]] = []
        self.inflight: dict[str, int] = defaultdict(int)
        self.recent: list[bool] = []  # per answer: refused by a budget
        self.down: set[str] = set()
        self.done = False


OPEN_DEAD_LEASES = (
    "SELECT holder FROM aegis.budget_leases WHERE state = 'open' AND holder IN ("
    + ", ".join(f"'{ns}/{pod}'" for ns, pods in PODS.items() for pod in pods if pod in GONE)
    + ")"
)


def busy(tally: Tally, pod: str) -> Callable[[], bool]:
    """The pod has requests in flight (so that a kill cuts some)."""
    return lambda: tally.inflight[pod] >= 5


async def client(
    session: aiohttp.ClientSession, fleet: Fleet, pod: str, tally: Tally, seed: int
) -> None:
    rng = random.Random(seed)
    n = 0
    while not tally.done:
        if pod in tally.down:
            await asyncio.sleep(0.05)  # deliberate pacing: the pod is down for now
            continue
        n += 1
        tag = f"{pod}/{seed}/{n}"
        body = {
            "model": "auto",
            "user": tag,
            "max_tokens": rng.randint(1, 40),
            "messages": [{"role": "user", "content": " ".join(["w"] * rng.randint(1, 60))}],
        }
        tally.inflight[pod] += 1
        try:
            async with session.post(fleet.url(pod) + "/v1/chat/completions", json=body) as answer:
                payload = await answer.read()
                if answer.status == 200:
                    doc = yaml.safe_load(payload)  # JSON is YAML
                    cost = Decimal(answer.headers.get("X-Aegis-Cost-USD", "0"))
                    tally.answered[tag] = (pod, answer.headers["X-Aegis-Request-Id"], cost)
                    tally.answer_ids[tag] = doc["id"]
                    tally.recent.append(False)
                elif answer.status in (429, 503) and b"budget" in payload:
                    tally.refused[tag] = pod
                    tally.recent.append(True)
                else:
                    tally.other.append((pod, answer.status, payload.decode()[:200]))
        except (aiohttp.ClientError, TimeoutError):
            tally.unknown[tag] = pod  # killed under us: the provider may have billed it
            await asyncio.sleep(0.05)  # deliberate pacing: no busy loop while it is down
        finally:
            tally.inflight[pod] -= 1


async def invoice(fleet: Fleet) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(fleet.url("openai") + "/_fake/invoice") as answer,
    ):
        calls: list[dict[str, Any]] = (await answer.json())["calls"]
        return calls


async def test_torture_budgets_hold_with_killed_sidecars(pg_url: str, tmp_path: Path) -> None:
    dsns = await write_budgets(pg_url)
    env = {
        "AEGIS_SPOOL_DIR": str(tmp_path / "spool"),
        "AEGIS_LEASE_TTL_SECONDS": str(TTL),
        "AEGIS_LEASE_HORIZON": "2",
    }
    async with Fleet(tmp_path, env) as fleet:
        await fleet.spawn("openai", "openai")
        async with aiohttp.ClientSession() as session:
            knobs = {"prices": {MODEL: PRICE}, "latency_ms": 150.0}
            async with session.post(fleet.url("openai") + "/_fake/knobs", json=knobs) as r:
                assert r.status == 200
        paths = {}
        for ns in NAMESPACES:
            paths[ns] = tmp_path / f"{ns}.yaml"
            paths[ns].write_text(yaml.safe_dump(config(fleet, ns, dsns[ns])))
        namespace_of = {pod: ns for ns, pods in PODS.items() for pod in pods}

        async def spawn(pod: str) -> None:
            pod_env = {"POD_NAME": pod, "OPENAI_API_KEY": pod_key(pod)}
            await fleet.spawn(pod, "sidecar", config=paths[namespace_of[pod]], env=pod_env)

        await asyncio.gather(*(spawn(pod) for pod in namespace_of))
        tally = Tally()
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            clients = [
                asyncio.create_task(client(session, fleet, pod, tally, seed=i * 1000 + j))
                for i, pod in enumerate(namespace_of)
                for j in range(CLIENTS)
            ]
            # Mid-run, counted in paid answers (the budgets still have money), and each
            # pod killed only while some of its requests are in flight.
            await poll_until(lambda: len(tally.answered) >= KILL_AT_PAID, within=300, every=0.05)
            for pod in (*GONE, *RESTARTED):
                await poll_until(busy(tally, pod), within=60, every=0.001)
                fleet.kill(pod)
                tally.down.add(pod)
            for pod in (*GONE, *RESTARTED):
                await wait_gone(fleet.pids[pod], within=30)
            killed_at = asyncio.get_running_loop().time()
            await asyncio.gather(*(spawn(pod) for pod in RESTARTED))
            tally.down.difference_update(RESTARTED)

            # Run until the dead pods' leases can have been reclaimed (TTL + their
            # longest call) and then every budget refuses: the last 300 answers were
            # refusals, whatever time that takes here.
            async def spent() -> bool:
                late = asyncio.get_running_loop().time() - killed_at > TTL + CALL_TIMEOUT + 2
                if not (late and len(tally.recent) > 300 and all(tally.recent[-300:])):
                    return False
                return not await fetch(pg_url, OPEN_DEAD_LEASES)  # every dead lease reclaimed

            await poll_until(spent, within=400, every=0.2)
            tally.done = True
            await asyncio.gather(*clients)
        # Graceful: leases returned, ledgers flushed; then the provider's bill.
        await asyncio.gather(*(fleet.stop(pod) for pod in namespace_of if pod not in GONE))
        logs = {pod: fleet.log(pod) for pod in namespace_of}
        calls = await invoice(fleet)

    rows = await fetch(  # the calls made (a budget's refusal is a row too, of no call)
        pg_url,
        "SELECT request_id, pod, cost_usd FROM aegis.ledger_entries WHERE status <> 'refused'",
    )
    ledger = {rid: (pod, cost) for rid, pod, cost in rows}
    budgets = await fetch(
        pg_url,
        "SELECT p.budget_scope, p.budget_namespace, p.budget_name, p.limit_usd, "
        "p.committed_usd, p.overdraft_usd, sum(l.settled_usd), "
        "sum(CASE WHEN l.reclaimed_at IS NOT NULL THEN l.amount_usd - l.settled_usd "
        "ELSE l.unknown_usd END) FROM aegis.budget_periods p JOIN aegis.budget_leases l "
        "USING (budget_scope, budget_namespace, budget_name, period) GROUP BY 1, 2, 3, 4, 5, 6",
    )
    for pod, log in logs.items():
        assert "Traceback" not in log, (pod, log[-3000:])
    assert not tally.other, tally.other[:5]
    assert len(tally.answered) >= KILL_AT_PAID and tally.refused

    by_tag = {call["tag"]: call for call in calls}
    assert len(by_tag) == len(calls) and None not in by_tag  # every billed call is tagged
    pod_of_key = {pod_key(pod): pod for pod in namespace_of}
    # No request that a budget refused reached the provider.
    assert not set(tally.refused) & set(by_tag)
    # Every answered call: billed once, in the ledger at exactly the billed cost; only
    # a pod gone for good may have answered calls whose rows died with its spool
    # (unknown outcome to the ledger: covered below).
    lost = 0
    for tag, (pod, rid, cost) in tally.answered.items():
        call = by_tag[tag]
        assert call["id"] == tally.answer_ids[tag]
        assert pod_of_key[call["key"]] == pod
        assert Decimal(call["costUSD"]) == cost
        if rid not in ledger and pod in GONE:
            lost += 1
            continue
        assert ledger[rid] == (pod, cost), tag
    # Per pod: never killed, the ledger is the invoice; killed, its rows are billed
    # calls and what is missing is of unknown outcome (cut off or never written).
    billed: dict[str, list[Decimal]] = defaultdict(list)
    for call in calls:
        billed[pod_of_key[call["key"]]].append(Decimal(call["costUSD"]))
    written: dict[str, list[Decimal]] = defaultdict(list)
    for pod, cost in ledger.values():
        written[pod].append(cost)
    for pod in namespace_of:
        if pod in (*GONE, *RESTARTED):
            assert len(written[pod]) <= len(billed[pod]), pod
            assert sum(written[pod]) <= sum(billed[pod]), pod
        else:
            assert sorted(written[pod]) == sorted(billed[pod]), pod

    # Every budget: the provider's bill within the limit, and covered by what the
    # ledger settled plus what it keeps charged for calls of unknown outcome.
    assert len(budgets) == len(NAMESPACES) + 1
    for scope, ns, name, limit, committed, overdraft, settled, unknown in budgets:
        pods = namespace_of if scope == "Cluster" else PODS[ns]
        bill = sum((c for pod in pods for c in billed[pod]), Decimal(0))
        ledger_sum = sum((c for pod in pods for c in written[pod]), Decimal(0))
        assert bill <= limit, (name, ns, bill, limit)
        assert settled == ledger_sum, (name, ns)
        assert bill <= settled + unknown, (name, ns, bill, settled, unknown)
        assert overdraft == 0, (name, ns)
        assert committed == settled + unknown <= limit, (name, ns, committed)
    print(
        f"answered {len(tally.answered)} ({lost} rows lost with a pod), refused "
        f"{len(tally.refused)}, cut off "
        f"{len(tally.unknown)}, billed {len(calls)}; per budget settled+unknown/limit: "
        + "; ".join(f"{n}@{ns or '*'} {s}+{u}/{lim}" for _, ns, n, lim, _, _, s, u in budgets)
    )
