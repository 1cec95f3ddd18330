"""The ledger at cluster scale: hundreds of simulated sidecars, one PostgreSQL, PgBouncer.

Each simulated sidecar is what a real one runs against the ledger: its own
spooled, batched :class:`LedgerStore` (its own connection pool, rows
charged to its lease by ``aegis.ledger_write``) and lease statements
(``aegis.lease_take`` / ``aegis.lease_return``, the calls of the budget lease
source) on the same pool. Sidecars are spread over a few worker processes (one
event loop each), forked once everything is imported.

Runs, from one invocation, each for ``--window`` seconds after a warm-up:

* ``1 sidecar``: one simulated sidecar offered the whole row rate (the baseline);
* ``N sidecars``: ``--sidecars`` (default 200) sharing the same row rate, each also
  taking or returning a lease slice every ``--lease-interval`` seconds;
* ``N leases only``: the same sidecars with lease statements and no rows (lease
  latency when the pool is not busy with batches);
* with ``--direct``, the same N sidecars without PgBouncer (one pool each);
* ``W writers, pre-encoded`` (``--writers``, default 8): what PostgreSQL and
  PgBouncer sustain when the clients cost next to nothing. Each writer sends batches
  of 256 rows encoded before the run through the real ``write_postgres`` (the same
  statement, function, lease settlement and summary trigger as a sidecar's batch)
  as fast as the database answers; no spool, no row building in the window.

Printed per run: rows/s committed (counted by the stores after commit), lease
operations/s and their p50/p99 latency (pool checkout included, as a sidecar sees
it), the most server connections PostgreSQL had for the database (sampled), the
CPU of PostgreSQL's processes (and PgBouncer's) in cores, and the workers' CPU per
row appended (making the row, as a request would, and writing it). A source that
cannot keep up offers less (rows owed for more than 0.1 s are not offered later,
and a sidecar appends while fewer than 1,024 of its rows wait for the database);
"backlog" is what was appended but not yet committed when the window closed;
"errors" counts failed batch writes (retried) and lease statements. A
throwaway PostgreSQL (fsync off, as in the tests) and PgBouncer (transaction mode,
20 server connections) are started from the installed binaries.

    python tests/bench/ledger_scale.py [--sidecars 200] [--procs 4] [--rows 60000]
        [--window 8] [--warmup 3] [--lease-interval 0.5] [--direct]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from tests.bench.ledger_sim import Job, run_worker  # noqa: E402
from tests.controlplane.pgbouncer import PgBouncerServer  # noqa: E402
from tests.controlplane.postgres import PostgresServer  # noqa: E402
from tests.sidecar.shared_helpers import fetch  # noqa: E402
from tests.sidecar.tenancy import provision  # noqa: E402

# -- the server side ------------------------------------------------------------------


def cpu_ticks(root_pid: int) -> dict[int, int]:
    """utime + stime of ``root_pid`` and its children, per pid (clock ticks)."""
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if root_pid in (pid, ppid):
            ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def cores(before: dict[int, int], after: dict[int, int], seconds: float) -> float:
    used = sum(after[p] - before.get(p, after[p]) for p in after)
    return used / os.sysconf("SC_CLK_TCK") / seconds


async def sample_connections(
    connection: asyncpg.Connection, database: str, until: float
) -> tuple[int, dict[str, float]]:
    """The most client backends the database had (sampled on a connection held from
    before the workers connected: without a pooler they may take every other one; an
    autovacuum worker is not a connection), and what they were doing on average: on
    CPU, waiting on a lock or I/O, waiting for their client in the middle of a
    statement (``Client:ClientRead``: between Parse/Describe and Bind), or idle."""
    peak, samples = 0, 0
    doing: dict[str, float] = {}
    query = (
        "SELECT CASE WHEN state = 'active' THEN COALESCE(wait_event_type || ':' || wait_event, "
        "'cpu') ELSE state END, count(*) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
        "GROUP BY 1"
    )
    while time.time() < until:
        rows = await connection.fetch(query, database)
        peak = max(peak, sum(int(n) for _, n in rows))
        samples += 1
        for what, n in rows:
            doing[str(what)] = doing.get(str(what), 0.0) + int(n)
        await asyncio.sleep(0.25)  # sampling interval
    return peak, {k: round(v / max(samples, 1), 1) for k, v in sorted(doing.items())}


def phase(
    args: argparse.Namespace,
    name: tuple[int, str],
    urls: tuple[str, str],
    sidecars: int,
    servers: tuple[int, int | None],
) -> dict[str, Any]:
    """One run (number, label): ``urls`` are the sidecars' and the direct one."""
    run, label = name
    url, direct = urls
    procs = min(args.procs, sidecars)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.time() + 2.0 + 0.02 * sidecars
    if label.endswith("pre-encoded"):
        start_at += 3.0  # the writers encode their batches first
    base = 10_000 * run
    jobs = [
        Job(
            url,
            [base + i for i in range(p, sidecars, procs)],
            0.0 if label.endswith("leases only") else args.rows / sidecars,
            args.lease_interval if sidecars > 1 else 0.0,
            start_at,
            args.warmup,
            args.window,
            args.spool,
            batches=label.endswith("pre-encoded"),
        )
        for p in range(procs)
    ]
    measure_from = start_at + args.warmup
    database = direct.rsplit("/", 1)[1]
    ticks: dict[str, dict[int, int]] = {}

    async def observe() -> tuple[int, dict[str, float]]:
        connection = await asyncpg.connect(direct)  # before the workers take them all
        try:
            for worker in workers:
                worker.start()
            await asyncio.sleep(max(measure_from - time.time(), 0))  # deliberate pacing: warm-up
            ticks["pg0"] = cpu_ticks(servers[0])
            ticks["bouncer0"] = cpu_ticks(servers[1]) if servers[1] else {}
            return await sample_connections(connection, database, measure_from + args.window)
        finally:
            await connection.close()

    workers = [ctx.Process(target=run_worker, args=(job, results)) for job in jobs]
    peak, doing = asyncio.run(observe())
    pg0, bouncer0 = ticks["pg0"], ticks["bouncer0"]
    pg1 = cpu_ticks(servers[0])
    bouncer1 = cpu_ticks(servers[1]) if servers[1] else {}
    outcomes = [results.get(timeout=args.warmup + args.window + 120) for _ in workers]
    for worker in workers:
        worker.join()
    latencies = sorted(x for o in outcomes for x in o["latencies"])
    written = sum(o["written"] for o in outcomes)
    return {
        "run": label,
        "sidecars": sidecars,
        "rows_per_s": written / args.window,
        "offered_rows_per_s": args.rows,
        "pending_at_end": sum(o["pending"] for o in outcomes),
        "lease_ops_per_s": sum(o["lease_ops"] for o in outcomes) / args.window,
        "lease_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "lease_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
        "server_connections": peak,
        "backends_doing": doing,
        "postgres_cores": cores(pg0, pg1, args.window),
        "pgbouncer_cores": cores(bouncer0, bouncer1, args.window) if servers[1] else None,
        "appended_rows_per_s": sum(o["appended"] for o in outcomes) / args.window,
        "errors": sum(o["errors"] for o in outcomes),
        "worker_us_per_row": 1e6
        * sum(o["cpu"] for o in outcomes)
        / max(sum(o["appended"] for o in outcomes), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sidecars", type=int, default=200)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--rows", type=float, default=60_000, help="rows/s offered in all")
    parser.add_argument("--lease-interval", type=float, default=0.5)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--direct", action="store_true", help="also run N sidecars direct")
    parser.add_argument("--writers", type=int, default=8, help="pre-encoded writers (0: none)")
    parser.add_argument(
        "--shared-buffers",
        default="512MB",
        help="PostgreSQL's shared_buffers (the server's default, 128MB, is smaller than what "
        "the runs write: new pages then wait for dirty ones to be written out)",
    )
    args = parser.parse_args(argv)
    args.spool = tempfile.mkdtemp(prefix="aegis-bench-ledger-")
    postgres = PostgresServer.launch()
    postgres.psql(f"ALTER SYSTEM SET shared_buffers = '{args.shared_buffers}'")
    postgres.restart()
    bouncer = PgBouncerServer.launch(postgres, pool_size=20)
    rows: list[dict[str, Any]] = []
    try:
        direct = postgres.create_database("scale")
        asyncio.run(provision(direct, "ns", [("dash", "dashscope", "100000000")]))
        pooled = bouncer.via(direct)
        pg_pid = postgres.pid or 0
        bouncer_pid = bouncer.pid
        runs = [
            ("1 sidecar", pooled, 1),
            (f"{args.sidecars} sidecars", pooled, args.sidecars),
            (f"{args.sidecars} leases only", pooled, args.sidecars),
        ]
        if args.direct:
            runs.append((f"{args.sidecars} direct", direct, args.sidecars))
        if args.writers:
            runs.append((f"{args.writers} writers, pre-encoded", pooled, args.writers))
        for run, (label, url, count) in enumerate(runs):
            pid = bouncer_pid if url == pooled else None
            result = phase(args, (run, label), (url, direct), count, (pg_pid, pid))
            result["pgbouncer"] = url == pooled
            rows.append(result)
            print(json.dumps(result), flush=True)
        [(total,)] = asyncio.run(fetch(direct, "SELECT count(*) FROM aegis.ledger_entries"))
        [(over,)] = asyncio.run(
            fetch(direct, "SELECT COALESCE(sum(overdraft_usd), 0) FROM aegis.budget_periods")
        )
        print(f"ledger rows in all: {total}; overdraft: {over}")
    finally:
        bouncer.destroy()
        postgres.destroy()
    print()
    print(_table(rows))
    return 0


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'run':20} {'pooler':6} {'appended/s':>10} {'rows/s':>8} {'lease ops/s':>11} "
        f"{'lease p50':>9} {'lease p99':>9} {'server conns':>12} {'pg cores':>8} {'bouncer':>7} "
        f"{'us/row':>6} {'backlog':>7} {'errors':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        p50 = f"{r['lease_p50_ms']:.1f}ms" if r["lease_p50_ms"] is not None else "-"
        p99 = f"{r['lease_p99_ms']:.1f}ms" if r["lease_p99_ms"] is not None else "-"
        bouncer = f"{r['pgbouncer_cores']:.2f}" if r["pgbouncer_cores"] is not None else "-"
        per_row = f"{r['worker_us_per_row']:.1f}" if r["appended_rows_per_s"] else "-"
        lines.append(
            f"{r['run']:20} {'yes' if r['pgbouncer'] else 'no':6} "
            f"{r['appended_rows_per_s']:>10,.0f} {r['rows_per_s']:>8,.0f} "
            f"{r['lease_ops_per_s']:>11,.0f} {p50:>9} {p99:>9} {r['server_connections']:>12} "
            f"{r['postgres_cores']:>8.2f} {bouncer:>7} {per_row:>6} "
            f"{r['pending_at_end']:>7} {r['errors']:>6}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
