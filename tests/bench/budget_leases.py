"""Budget leases vs a naive per-request UPDATE: many processes, one budget, real PostgreSQL.

For each process count N (default 8, 16, 32), N worker processes each run C async
clients (default 20: more sidecars simulated with async clients) that make budget
decisions (reserve the worst case, settle a random real cost) on one budget:

* ``lease``: the sidecar's BudgetBook + LeaseBudgetSource (a slice per sidecar,
  topped up in the background, one statement per take);
* ``naive``: one ``UPDATE naive_budgets SET spent = spent + :cost WHERE … AND
  spent + :cost <= limit RETURNING …`` per decision (a gateway without leases).

Runs per mode and N:

1. throughput, budget decisions only (``lease``, rows ``no``): the decision rate
   the target is about;
2. throughput with a ledger row per granted decision (rows ``yes``), written by
   the sidecar's spooled, batched LedgerStore as the request path does: the whole
   path's cost, and the same load for the naive baseline;
3. exhaustion: a small budget spent until every client is refused, rows written;
   the final settled spend (the ledger's sum, and the budget row) against the limit.

Throughput runs use a budget too large to run out and measure, after a warm-up, a
steady window: decisions per second, PostgreSQL round trips per 100 decisions
counted by the clients (lease statements, naive UPDATEs, ledger batches: every one
is a single autocommit statement) and checked on the server
(``pg_stat_database.xact_commit``), and the workers' CPU per decision.

A throwaway PostgreSQL is started from the installed binaries (fsync off, as in
the tests). Workers are forked once this process has imported everything, so
start-up costs no import time. Exit status 1 when a target is missed (unless
``--no-check``): >= 20,000 budget decisions/s, <= 1 round trip per 100 decisions,
no overspend.

    python tests/bench/budget_leases.py [--procs 8,16,32] [--clients 20] [--window 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from aegis.sidecar.budgets import (  # noqa: E402
    BudgetBook,
    LeaseSettings,
    Reservation,
)
from aegis.sidecar.contract import BudgetSpec, decode  # noqa: E402
from aegis.sidecar.contract.money import MICRO  # noqa: E402
from aegis.sidecar.ledger.db import create_engine  # noqa: E402
from aegis.sidecar.ledger.migrate import migrate_async  # noqa: E402
from aegis.sidecar.ledger.models import LedgerRecord  # noqa: E402
from aegis.sidecar.ledger.spool import Spool  # noqa: E402
from aegis.sidecar.ledger.store import LedgerStore  # noqa: E402
from aegis.sidecar.runtime.wiring import open_budgets  # noqa: E402
from tests.controlplane.postgres import PostgresServer  # noqa: E402
from tests.sidecar.tenancy import provision  # noqa: E402

PERIOD = "2026-11"
NAIVE_TABLE = (
    "CREATE TABLE IF NOT EXISTS naive_budgets (name text PRIMARY KEY, "
    "limit_usd numeric(18, 6) NOT NULL, spent_usd numeric(18, 6) NOT NULL)"
)
NAIVE_SPEND = text(
    "UPDATE naive_budgets SET spent_usd = spent_usd + :cost "
    "WHERE name = :name AND spent_usd + :cost <= limit_usd RETURNING spent_usd"
)


@dataclass(frozen=True)
class Job:
    mode: str  # lease | naive
    url: str
    budget: str
    limit: Decimal
    index: int
    clients: int
    start_at: float  # wall clock: every worker starts together
    warmup: float
    window: float
    stop_after: float  # seconds after start_at (exhaustion: until all refused)
    exhaust: bool
    spool: str
    ledger: bool = True  # write a ledger row per granted decision


def row(job: Job, cost: Decimal, now: datetime) -> LedgerRecord:
    return LedgerRecord(
        request_id=uuid.uuid4().hex,
        created_at=now,
        period=PERIOD,
        namespace="bench",
        pod=f"{job.budget}-w{job.index}",
        route="bench",
        rule="batch",
        arm="stable",
        provider="dashscope",
        model="qwen-plus",
        data_class="internal",
        tokens_in=100,
        tokens_out=20,
        cost_usd=cost,
        latency_ms=1,
    )


async def work(job: Job) -> dict[str, Any]:
    """One worker process: C clients deciding as fast as they can."""
    spec = decode(
        BudgetSpec, {"name": job.budget, "provider": "dashscope", "limitUSD": str(job.limit)}
    )
    store = LedgerStore(
        job.url,
        spool=Spool(Path(job.spool) / job.budget / f"w{job.index}"),
        holder=f"bench/{job.budget}-w{job.index}",
    )
    await store.start()
    source = None
    naive = None
    if job.mode == "lease":
        # Small slices (2 s of spend) so that steady state includes regular top-ups.
        settings = LeaseSettings(horizon=2.0, min_slice_share=Decimal("0.000001"))
        book, source = await open_budgets([spec], store, settings=settings)
    else:
        book = BudgetBook([])
        naive = create_engine(
            job.url,
            pool_size=min(job.clients, 8),
            max_overflow=0,
            pool_pre_ping=False,
            isolation_level="AUTOCOMMIT",
        )
    counts = {"decisions": 0, "granted": 0, "naive": 0}
    spent = Decimal(0)
    marks: dict[str, dict[str, float]] = {}
    refused_streak = [0] * job.clients
    loop = asyncio.get_running_loop()
    begin = loop.time() + max(0.0, job.start_at - time.time())

    def snapshot() -> dict[str, float]:
        lease = sum(source.statements.values()) if source else 0
        cpu = time.process_time()
        return {**counts, "lease": lease, "ledger": store.batches_written, "cpu": cpu}

    async def client(k: int) -> None:
        nonlocal spent
        rng = random.Random(job.index * 1000 + k)
        await asyncio.sleep(begin - loop.time())  # deliberate pacing: a common start
        while loop.time() < begin + job.stop_after:
            worst = Decimal(rng.randint(100, 5000)) * MICRO
            actual = (worst * rng.randint(30, 100) / 100).quantize(MICRO)
            counts["decisions"] += 1
            if naive is not None:
                async with naive.connect() as conn:
                    counts["naive"] += 1
                    ok = await conn.execute(NAIVE_SPEND, {"cost": actual, "name": job.budget})
                    granted = ok.first() is not None
                charged = actual
            else:
                outcome = await book.acquire("dashscope", worst)
                granted = isinstance(outcome, Reservation)
                charged = actual
                if isinstance(outcome, Reservation):
                    charged = book.settle(outcome, actual)
            if granted:
                counts["granted"] += 1
                spent += charged
                if job.ledger:
                    store.append(row(job, Decimal(charged), datetime.now(UTC)))
                refused_streak[k] = 0
            else:
                refused_streak[k] += 1
                if job.exhaust and refused_streak[k] >= 50:
                    return  # this client has seen the budget run out
            await asyncio.sleep(0)  # a real request awaits its upstream here

    async def marker() -> None:
        await asyncio.sleep(begin + job.warmup - loop.time())  # deliberate pacing: warm-up
        marks["start"] = snapshot()
        await asyncio.sleep(job.window)  # deliberate pacing: the measured window
        marks["end"] = snapshot()

    tasks = [asyncio.create_task(client(k)) for k in range(job.clients)]
    mark = asyncio.create_task(marker()) if not job.exhaust else None
    await asyncio.gather(*tasks)
    if mark is not None:
        await mark
    if source is not None:
        await source.aclose()
    await store.aclose()
    if naive is not None:
        await naive.dispose()
    return {"marks": marks, "spent": str(spent), "granted": counts["granted"]}


def run_worker(job: Job, results: Any) -> None:
    results.put(asyncio.run(work(job)))


async def server_xacts(url: str) -> int:
    engine = create_engine(url)
    async with engine.connect() as conn:
        value = await conn.scalar(
            text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        )
    await engine.dispose()
    return int(value)


async def prepare(url: str, budget: str, limit: Decimal) -> None:
    # The budget as the operator writes it, spent by namespace bench (this session's role).
    await provision(url, "bench", [(budget, "dashscope", str(limit))], migrate=False)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(NAIVE_TABLE))
        await conn.execute(
            text("INSERT INTO naive_budgets VALUES (:n, :l, 0) ON CONFLICT DO NOTHING"),
            {"n": budget, "l": limit},
        )
    await engine.dispose()


async def settle_check(url: str, mode: str, budget: str) -> tuple[Decimal, Decimal]:
    """(ledger's settled spend, the budget row's committed/spent) after a phase."""
    engine = create_engine(url)
    async with engine.connect() as conn:
        ledger = await conn.scalar(
            text(
                "SELECT coalesce(sum(cost_usd), 0) FROM aegis.ledger_entries "
                "WHERE route = 'bench' AND pod LIKE :p"
            ),
            {"p": f"{budget}-w%"},
        )
        if mode == "lease":
            booked = await conn.scalar(
                text("SELECT committed_usd FROM aegis.budget_periods WHERE budget_name = :b"),
                {"b": budget},
            )
        else:
            booked = await conn.scalar(
                text("SELECT spent_usd FROM naive_budgets WHERE name = :b"), {"b": budget}
            )
    await engine.dispose()
    return Decimal(ledger), Decimal(booked or 0)


def phase(
    args: argparse.Namespace, url: str, mode: str, procs: int, *, exhaust: bool, ledger: bool
) -> dict[str, Any]:
    kind = "x" if exhaust else "t" if ledger else "b"
    budget = f"{mode}-{procs}-{kind}"
    limit = Decimal(args.small_limit if exhaust else "1000000")
    asyncio.run(prepare(url, budget, limit))
    xacts_before = asyncio.run(server_xacts(url))
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.time() + 1.0 + 0.05 * procs
    jobs = [
        Job(
            mode,
            url,
            budget,
            limit,
            i,
            args.clients,
            start_at,
            args.warmup,
            args.window,
            args.warmup + args.window if not exhaust else 60.0,
            exhaust,
            args.spool,
            ledger,
        )
        for i in range(procs)
    ]
    workers = [ctx.Process(target=run_worker, args=(job, results)) for job in jobs]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=180) for _ in workers]
    for worker in workers:
        worker.join()
    xacts = asyncio.run(server_xacts(url)) - xacts_before
    settled, booked = asyncio.run(settle_check(url, mode, budget))
    spent = sum((Decimal(o["spent"]) for o in outcomes), Decimal(0))
    result: dict[str, Any] = {
        "mode": mode,
        "procs": procs,
        "ledger": ledger,
        "limit": limit,
        "spent": spent,
        "settled": settled,
        "booked": booked,
    }
    if not exhaust:
        delta = {
            key: sum(o["marks"]["end"][key] - o["marks"]["start"][key] for o in outcomes)
            for key in ("decisions", "granted", "lease", "ledger", "naive", "cpu")
        }
        decisions = max(delta["decisions"], 1)
        result["rate"] = delta["decisions"] / args.window
        result["budget_rt"] = (delta["lease"] + delta["naive"]) / decisions
        result["ledger_rt"] = delta["ledger"] / decisions
        result["server_xacts"] = xacts / max(sum(o["granted"] for o in outcomes), 1)
        result["cpu_us"] = 1e6 * delta["cpu"] / decisions  # the workers' CPU only
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--procs", default="8,16,32")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--small-limit", default="5")
    parser.add_argument("--url", help="use this PostgreSQL database instead of a throwaway server")
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args(argv)
    args.spool = tempfile.mkdtemp(prefix="aegis-bench-spool-")
    server = None
    url = args.url
    if url is None:
        server = PostgresServer.launch()
        url = server.create_database("bench")
    rows: list[dict[str, Any]] = []
    try:
        asyncio.run(migrate_async(url))
        for procs in (int(p) for p in args.procs.split(",")):
            for mode, ledger in (("lease", False), ("lease", True), ("naive", True)):
                result = phase(args, url, mode, procs, exhaust=False, ledger=ledger)
                if ledger:  # the exhaustion run always writes rows (it checks them)
                    final = phase(args, url, mode, procs, exhaust=True, ledger=True)
                    result.update({k: final[k] for k in ("limit", "spent", "settled", "booked")})
                rows.append(result)
                print(json.dumps(result, default=str), flush=True)
    finally:
        if server is not None:
            server.destroy()
    print()
    print(_table(rows, args.clients))
    failed = _check(rows)
    for line in failed:
        print("MISSED:", line)
    return 1 if failed and not args.no_check else 0


def _table(rows: list[dict[str, Any]], clients: int) -> str:
    head = (
        f"{'mode':6} {'rows':5} {'procs':>5} {'clients':>7} {'decisions/s':>12} "
        f"{'budget RT/100':>14} {'ledger RT/100':>14} {'pg xacts/100':>13} "
        f"{'CPU us/dec':>10} {'limit':>6} {'settled':>10} {'overspend':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        over = "-" if not r["ledger"] else str(max(r["settled"] - r["limit"], Decimal(0)))
        settled = "-" if not r["ledger"] else str(r["settled"])
        limit = "-" if not r["ledger"] else str(r["limit"])
        lines.append(
            f"{r['mode']:6} {'yes' if r['ledger'] else 'no':5} {r['procs']:>5} "
            f"{r['procs'] * clients:>7} {r['rate']:>12,.0f} {100 * r['budget_rt']:>14.4f} "
            f"{100 * r['ledger_rt']:>14.3f} {100 * r['server_xacts']:>13.3f} "
            f"{r['cpu_us']:>10.1f} {limit:>6} {settled:>10} "
            f"{over:>9}"
        )
    return "\n".join(lines)


def _check(rows: list[dict[str, Any]]) -> list[str]:
    failed = []
    for r in rows:
        label = f"{r['mode']} x{r['procs']} ({'with' if r['ledger'] else 'no'} ledger rows)"
        if r["ledger"]:
            if r["settled"] > r["limit"] or r["booked"] > r["limit"]:
                failed.append(f"{label}: overspend {r['settled']} > {r['limit']}")
            if r["settled"] != r["spent"]:
                failed.append(f"{label}: ledger {r['settled']} != settled by clients {r['spent']}")
        if r["mode"] == "lease":
            # The decision target is for budget decisions; with a ledger row per
            # decision the figure shows the whole request path's write cost.
            if not r["ledger"] and r["rate"] < 20_000:
                failed.append(f"{label}: {r['rate']:.0f} decisions/s < 20,000")
            if r["budget_rt"] > 0.01 or r["server_xacts"] > 0.01:
                failed.append(f"{label}: more than 1 round trip per 100 decisions")
    return failed


if __name__ == "__main__":
    sys.exit(main())
