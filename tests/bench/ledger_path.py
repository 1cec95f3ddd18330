"""The third table: the same sidecar with its ledger on PostgreSQL, on SQLite, and in
memory (the nearest to "off" the config allows: every sidecar has a ledger; an
in-memory SQLite one has no file, no spool and no disk write).

A throwaway PostgreSQL server (the test bed's: fsync off, as the ledger benchmarks
run it) gets the ledger's schema and the bench namespace's budget, as the operator
would write them. Each round, on each sidecar in turn: latency at c=1, then a burst at
c=32 whose every request latency is kept; the burst ends when its last ledger row is
committed (the sidecar's ``aegis_ledger_queue_rows`` is back to 0), so rows/s is
rows committed over that time. The rows are counted in the database afterwards: one
per answered request. CPU per request is the sidecar's over the bursts; the database
server's (PostgreSQL's processes) is given per row.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import yaml

from tests.bench.harness import (
    AUTH,
    OtherLoad,
    cpu_seconds,
    free_port,
    pct,
    ratio,
    sidecar_command,
    sidecar_document,
    start_timed,
    stop,
    tree_cpu_seconds,
)
from tests.bench.overhead import BODY, CONCURRENCY
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.tenancy import provision_config

DRAIN_WITHIN = 60.0


@dataclass
class LedgerTarget:
    name: str
    ledger_url: str
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    metrics: str = ""
    latencies: list[float] = field(default_factory=list)  # c=1
    loaded: list[float] = field(default_factory=list)  # every request of the bursts
    rows_rates: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    cpu_s: float = 0.0  # the sidecar's, over the bursts
    db_cpu_s: float = 0.0  # PostgreSQL's processes', over the bursts
    burst_requests: int = 0
    requests: int = 0
    rows: int = 0


async def queue_rows(http: aiohttp.ClientSession, metrics_url: str) -> float:
    async with http.get(metrics_url) as resp:
        text = await resp.text()
    # With or without labels (the sidecar's identity may label every series).
    values = [
        float(line.rsplit(None, 1)[1])
        for line in text.splitlines()
        if line.startswith(("aegis_ledger_queue_rows ", "aegis_ledger_queue_rows{"))
    ]
    if not values:
        raise AssertionError("no aegis_ledger_queue_rows in the sidecar's metrics")
    return sum(values)


async def burst(http: aiohttp.ClientSession, target: LedgerTarget, total: int) -> None:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t = time.perf_counter()
            async with http.post(target.url, json=BODY, headers=AUTH) as resp:
                await resp.read()
                assert resp.status == 200, f"{target.name}: {await resp.text()}"
            target.loaded.append((time.perf_counter() - t) * 1000)

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    target.rps.append(total / (time.perf_counter() - t))
    await drained(http, target)
    target.rows_rates.append(total / (time.perf_counter() - t))


async def drained(http: aiohttp.ClientSession, target: LedgerTarget) -> None:
    """Once every ledger row the sidecar queued is committed."""
    t = time.perf_counter()
    while await queue_rows(http, target.metrics) > 0:
        if time.perf_counter() - t > DRAIN_WITHIN:
            raise AssertionError(f"{target.name}: ledger rows still queued after {DRAIN_WITHIN}s")
        await asyncio.sleep(0.01)  # poll the queue gauge until it is empty (deadline above)


async def count_rows(target: LedgerTarget) -> int | None:
    if target.ledger_url.startswith("postgresql"):
        connection = await asyncpg.connect(target.ledger_url)
        try:
            count: int = await connection.fetchval("SELECT count(*) FROM aegis.ledger_entries")
            return count
        finally:
            await connection.close()
    path = target.ledger_url.split(":///", 1)[1]
    if path == ":memory:":
        return None
    with sqlite3.connect(path) as db:
        found: int = db.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
        return found


async def start_sidecars(
    targets: list[LedgerTarget], upstream: str, workdir: Path, pod: str
) -> None:
    for target in targets:

        def command(port: int, attempt: str, target: LedgerTarget = target) -> list[str]:
            doc = sidecar_document(upstream, port, target.ledger_url)
            doc["listen"]["metricsPort"] = metrics = free_port()
            target.metrics = f"http://127.0.0.1:{metrics}/metrics"
            path = workdir / f"{target.name}-{attempt}.yaml"
            path.write_text(yaml.safe_dump(doc))
            return sidecar_command(path)

        # Its own holder each; PostgreSQL's spool in the work dir (SQLite's is next to
        # its file, an in-memory ledger has none).
        env = {"POD_NAME": f"{pod}-{target.name.replace(' ', '-')}"}
        if target.ledger_url.startswith("postgresql"):
            env["AEGIS_SPOOL_DIR"] = str(workdir / "spool")
        target.proc, port, _ = await start_timed(command, env=env, warm_up=False)
        target.url = f"http://127.0.0.1:{port}/v1/chat/completions"


async def measure(
    upstream: str, fake_pid: int, n: int, rounds: int
) -> tuple[list[LedgerTarget], OtherLoad]:
    """Start PostgreSQL and the three sidecars, measure them in interleaved rounds."""
    workdir = Path(tempfile.mkdtemp(prefix="aegis-bench-ledger-"))
    server = PostgresServer.launch()
    targets: list[LedgerTarget] = []
    try:
        pg_url = server.create_database("bench")
        await provision_config(pg_url, sidecar_document(upstream, 0, pg_url))
        targets = [
            LedgerTarget("postgres", pg_url),
            LedgerTarget("sqlite", f"sqlite+aiosqlite:///{workdir / 'ledger.db'}"),
            LedgerTarget("in memory", "sqlite+aiosqlite:///:memory:"),
        ]
        await start_sidecars(targets, upstream, workdir, "bench-ledger")
        pg_pid = server.pid or 0
        load = OtherLoad(lambda: [fake_pid, pg_pid, *(t.proc.pid for t in targets if t.proc)])
        per_round = max(1, n // rounds)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http:
            for t in targets:  # warm-up: connections, caches, the PostgreSQL lease
                for _ in range(20):
                    async with http.post(t.url, json=BODY, headers=AUTH) as resp:
                        assert resp.status == 200, await resp.text()
                        await resp.read()
                await drained(http, t)
            warm = {t.name: await count_rows(t) for t in targets}
            with load:
                for _ in range(rounds):
                    for t in targets:
                        assert t.proc is not None
                        for _ in range(per_round):
                            started = time.perf_counter()
                            async with http.post(t.url, json=BODY, headers=AUTH) as resp:
                                await resp.read()
                            t.latencies.append((time.perf_counter() - started) * 1000)
                        cpu0, db0 = cpu_seconds(t.proc.pid), tree_cpu_seconds(pg_pid)
                        await burst(http, t, 4 * per_round)
                        t.cpu_s += cpu_seconds(t.proc.pid) - cpu0
                        t.db_cpu_s += tree_cpu_seconds(pg_pid) - db0
                        t.burst_requests += 4 * per_round
                        t.requests += 5 * per_round
        for t in targets:
            before, after = warm[t.name], await count_rows(t)
            if before is not None and after is not None:
                t.rows = after - before
                assert t.rows == t.requests, f"{t.name}: {t.rows} rows for {t.requests} requests"
    finally:
        for t in targets:
            stop(t.proc)
        server.destroy()
    return targets, load


def report(targets: list[LedgerTarget], load: OtherLoad) -> None:
    print("\n== 3. ledger: the same sidecar, its ledger on PostgreSQL, on SQLite, in memory ==")
    print(load.report())
    base = {t.name: t for t in targets}["in memory"]
    base_rows = statistics.median(base.rows_rates)
    print(
        f"{'ledger':<12}{'rows/s written':>20}{f'req/s c={CONCURRENCY}':>12}"
        f"{'p50 / p99 c=1':>18}{f'p99 c={CONCURRENCY}':>18}{'CPU per request':>22}"
        f"{'database CPU per row':>22}{'rows':>8}"
    )
    for t in targets:
        rows = statistics.median(t.rows_rates)
        p99_loaded = pct(t.loaded, 99)
        cpu = 1000 * t.cpu_s / t.burst_requests
        base_cpu = 1000 * base.cpu_s / base.burst_requests
        mine = t is not base
        r_rows = f" ({ratio(rows, base_rows)})" if mine else ""
        r_p99 = f" ({ratio(p99_loaded, pct(base.loaded, 99))})" if mine else ""
        r_cpu = f" ({ratio(cpu, base_cpu)})" if mine else ""
        db = f"{1000 * t.db_cpu_s / t.burst_requests:.3f} ms" if t.name == "postgres" else "-"
        print(
            f"{t.name:<12}{f'{rows:,.0f}{r_rows}':>20}{statistics.median(t.rps):>12,.0f}"
            f"{f'{statistics.median(t.latencies):.2f} / {pct(t.latencies, 99):.2f} ms':>18}"
            f"{f'{p99_loaded:.1f} ms{r_p99}':>18}{f'{cpu:.3f} ms{r_cpu}':>22}{db:>22}"
            f"{t.rows if t.rows else '-':>8}"
        )
    print(
        "(ratios to the in-memory ledger; rows: counted in the database after the run, "
        "one per answered request; c=1 latencies include the upstream's)"
    )
