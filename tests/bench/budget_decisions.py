"""Budget and rate-limit decisions across sidecar processes on one PostgreSQL.

Worker processes, each a sidecar's real budget book and lease source
(:func:`aegis.sidecar.runtime.wiring.open_budgets`, one holder ``<namespace>/<pod>``
per process, through its namespace's own tenant role) and, in the ``+rate`` runs, its
real rate limiter with rate-limit leases (:class:`aegis.sidecar.limits.RateLimiter`,
:class:`aegis.sidecar.limits.leases.LeaseSlots`). Each runs C async clients deciding
as fast as they can: admit on the rate limits (one request, a token estimate), reserve
the worst case on every budget that applies, settle a random real cost, finish the
admission. No provider, no ledger rows: the decisions and their database traffic.

Runs, all from the same invocation (the first is the baseline):

* ``single``: every process spends one namespaced budget (one namespace);
* ``tenancy``: the processes are spread over four namespaces; a decision reserves in
  its namespace's budget and in a Cluster budget all four spend, all or nothing;
* ``tenancy+rate``: the same plus requests- and tokens-per-minute limits on both
  budgets (high enough never to refuse: the cost of deciding is measured).

Printed per run: decisions per second over a steady window after a warm-up,
PostgreSQL round trips per 100 decisions as the clients count them (every lease
statement, budget or rate, is one autocommit statement: one round trip) and as the
server counts them (``pg_stat_database.xact_commit``), and the workers' CPU per
decision. Not a test: figures beside the baseline, for docs/ledger.md.

    python tests/bench/budget_decisions.py [--procs 16] [--clients 20] [--window 5]
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
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from aegis.sidecar.budgets import LeaseSettings, Reservation  # noqa: E402
from aegis.sidecar.contract import (  # noqa: E402
    BudgetKey,
    BudgetScope,
    BudgetSpec,
    RateUnit,
    decode,
)
from aegis.sidecar.contract.money import MICRO  # noqa: E402
from aegis.sidecar.ledger import control  # noqa: E402
from aegis.sidecar.ledger.db import create_engine  # noqa: E402
from aegis.sidecar.ledger.migrate import migrate_async  # noqa: E402
from aegis.sidecar.ledger.spool import Spool  # noqa: E402
from aegis.sidecar.ledger.store import LedgerStore  # noqa: E402
from aegis.sidecar.limits import Admission, PoolKey, RateLimiter  # noqa: E402
from aegis.sidecar.limits.leases import LeaseSlots  # noqa: E402
from aegis.sidecar.runtime.wiring import open_budgets  # noqa: E402
from tests.controlplane.postgres import PostgresServer  # noqa: E402
from tests.sidecar.tenancy import tenant_url  # noqa: E402

RUNS = ("single", "tenancy", "tenancy+rate")
LIMIT = Decimal("1000000")  # never runs out
RPM = 100_000_000  # never refuses
TPM = 10_000_000_000
PROVIDER = "dashscope"


@dataclass(frozen=True)
class Job:
    run: str
    dsn: str
    namespace: str
    index: int
    clients: int
    start_at: float  # wall clock: every worker starts together
    warmup: float
    window: float
    spool: str


def budgets(job: Job) -> list[BudgetSpec]:
    own = {"name": "team", "provider": PROVIDER, "limitUSD": str(LIMIT)}
    cluster = {"name": "all", "provider": PROVIDER, "limitUSD": str(LIMIT), "scope": "Cluster"}
    specs = [own] if job.run == "single" else [own, cluster]
    return [decode(BudgetSpec, spec) for spec in specs]


def rate_keys(job: Job) -> list[tuple[PoolKey, int]]:
    keys = []
    for namespace, name in ((job.namespace, "team"), ("", "all")):
        keys.append((PoolKey("Budget", namespace, name, RateUnit.REQUESTS), RPM))
        keys.append((PoolKey("Budget", namespace, name, RateUnit.TOKENS), TPM))
    return keys


async def work(job: Job) -> dict[str, Any]:
    """One worker process: C clients deciding as fast as they can."""
    holder = f"{job.namespace}/{job.run.replace('+', '-')}-w{job.index}"
    store = LedgerStore(job.dsn, spool=Spool(Path(job.spool) / holder), holder=holder)
    await store.start()
    # Small slices (2 s of spend) so that steady state includes regular top-ups.
    settings = LeaseSettings(horizon=2.0, min_slice_share=Decimal("0.000001"))
    book, source = await open_budgets(budgets(job), store, settings=settings)
    assert source is not None
    limiter: RateLimiter | None = None
    slots: LeaseSlots | None = None
    if job.run.endswith("+rate"):
        limiter = RateLimiter()
        limiter.configure(rate_keys(job))
        slots = LeaseSlots(store.database, holder)
        limiter.use_source(slots)
        slots.start()
    demands = [(key, 1 if i % 2 == 0 else 600) for i, (key, _) in enumerate(rate_keys(job))]
    counts = {"decisions": 0, "granted": 0}
    marks: dict[str, dict[str, float]] = {}
    loop = asyncio.get_running_loop()
    begin = loop.time() + max(0.0, job.start_at - time.time())
    stop = begin + job.warmup + job.window + 0.5

    def snapshot() -> dict[str, float]:
        budget_rt = sum(source.statements.values())
        rate_rt = slots.statements if slots is not None else 0
        return {**counts, "budget_rt": budget_rt, "rate_rt": rate_rt, "cpu": time.process_time()}

    async def client(k: int) -> None:
        rng = random.Random(job.index * 1000 + k)
        await asyncio.sleep(begin - loop.time())  # deliberate pacing: a common start
        while loop.time() < stop:
            worst = Decimal(rng.randint(100, 5000)) * MICRO
            actual = (worst * rng.randint(30, 100) / 100).quantize(MICRO)
            counts["decisions"] += 1
            admission = await limiter.acquire(demands) if limiter is not None else None
            if admission is None or isinstance(admission, Admission):
                outcome = await book.acquire(PROVIDER, worst)
                if isinstance(outcome, Reservation):
                    counts["granted"] += 1
                    if admission is not None:
                        admission.called()
                    book.settle(outcome, actual)
                if admission is not None:
                    admission.finish(PROVIDER, rng.randint(100, 600))
            await asyncio.sleep(0)  # a real request awaits its upstream here

    async def marker() -> None:
        await asyncio.sleep(begin + job.warmup - loop.time())  # deliberate pacing: warm-up
        marks["start"] = snapshot()
        await asyncio.sleep(job.window)  # deliberate pacing: the measured window
        marks["end"] = snapshot()

    tasks = [asyncio.create_task(client(k)) for k in range(job.clients)]
    await asyncio.gather(marker(), *tasks)
    if slots is not None:
        await slots.aclose()
    await source.aclose()
    await store.aclose()
    return {"marks": marks}


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


async def prepare(url: str, namespaces: list[str]) -> dict[str, str]:
    """Tenant roles (their DSNs), the budgets and their rate limits, as the operator
    writes them."""
    await migrate_async(url)
    dsns = {ns: await tenant_url(url, ns) for ns in namespaces}
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        keys = [(BudgetKey(BudgetScope.NAMESPACE, ns, "team"), [ns]) for ns in namespaces]
        keys.append((BudgetKey(BudgetScope.CLUSTER, "", "all"), namespaces))
        for key, spenders in keys:
            await control.set_budget(conn, key, provider=PROVIDER, limit=LIMIT, spenders=spenders)
            await control.set_rate_limits(conn, key, requests_per_minute=RPM, tokens_per_minute=TPM)
    await engine.dispose()
    return dsns


def phase(args: argparse.Namespace, url: str, dsns: dict[str, str], run: str) -> dict[str, Any]:
    namespaces = ["bench-0"] if run == "single" else sorted(dsns)
    xacts_before = asyncio.run(server_xacts(url))
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.time() + 1.0 + 0.05 * args.procs
    jobs = [
        Job(
            run,
            dsns[namespaces[i % len(namespaces)]],
            namespaces[i % len(namespaces)],
            i,
            args.clients,
            start_at,
            args.warmup,
            args.window,
            args.spool,
        )
        for i in range(args.procs)
    ]
    workers = [ctx.Process(target=run_worker, args=(job, results)) for job in jobs]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join()
    xacts = asyncio.run(server_xacts(url)) - xacts_before
    delta = {
        key: sum(o["marks"]["end"][key] - o["marks"]["start"][key] for o in outcomes)
        for key in ("decisions", "granted", "budget_rt", "rate_rt", "cpu")
    }
    decisions = max(delta["decisions"], 1)
    total = sum(o["marks"]["end"]["decisions"] for o in outcomes)
    return {
        "run": run,
        "procs": args.procs,
        "budgets": 1 if run == "single" else 2,
        "rate_limits": 4 if run.endswith("+rate") else 0,
        "rate": delta["decisions"] / args.window,
        "granted": delta["granted"] / decisions,
        "budget_rt": 100 * delta["budget_rt"] / decisions,
        "rate_rt": 100 * delta["rate_rt"] / decisions,
        "server_xacts": 100 * xacts / max(total, 1),  # whole run: start, warm-up, close
        "cpu_us": 1e6 * delta["cpu"] / decisions,
    }


def table(rows: list[dict[str, Any]], clients: int) -> str:
    head = (
        f"{'run':<14}{'procs':>6}{'clients':>8}{'budgets':>8}{'limits':>7}{'decisions/s':>13}"
        f"{'vs single':>10}{'budget RT/100':>14}{'rate RT/100':>12}{'pg xacts/100':>13}"
        f"{'CPU us/dec':>11}"
    )
    base = rows[0]["rate"] if rows else 1
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['run']:<14}{r['procs']:>6}{r['procs'] * clients:>8}{r['budgets']:>8}"
            f"{r['rate_limits']:>7}{r['rate']:>13,.0f}{r['rate'] / base:>9.2f}x"
            f"{r['budget_rt']:>14.4f}{r['rate_rt']:>12.4f}{r['server_xacts']:>13.4f}"
            f"{r['cpu_us']:>11.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--procs", type=int, default=16)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--url", help="use this PostgreSQL database instead of a throwaway server")
    args = parser.parse_args(argv)
    args.spool = tempfile.mkdtemp(prefix="aegis-bench-spool-")
    server = None
    url = args.url
    if url is None:
        server = PostgresServer.launch()
        url = server.create_database("bench")
    rows: list[dict[str, Any]] = []
    try:
        dsns = asyncio.run(prepare(url, [f"bench-{i}" for i in range(4)]))
        for run in RUNS:
            rows.append(phase(args, url, dsns, run))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if server is not None:
            server.destroy()
    print()
    print(table(rows, args.clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
