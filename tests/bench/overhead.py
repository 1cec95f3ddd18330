"""The first table: what a proxy adds to a call (latency, CPU, throughput, memory,
start-up), the upstream directly beside the proxies, in interleaved rounds.

Latency at c=1, stream TTFB, throughput at c=32 and at c=128 are measured target by
target within a round, the rounds repeated: other work on the machine then slows
every target alike instead of whichever happened to run at that moment. Latencies are
pooled over the rounds; the throughput is the median round; CPU per request is the
proxy's CPU time over all throughput rounds divided by their requests (all threads,
so the ledger's SQLite thread counts too). RSS idle is taken once the timed start is
ready, before any request; RSS under load is the most seen after a throughput round.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from dataclasses import dataclass, field

import aiohttp

from tests.bench.harness import AUTH, OtherLoad, cpu_seconds, pct, ratio, rss_mb

SYSTEM = "You are a helpful assistant for the support team."
USER = "Summarise the ticket about the delayed delivery " * 20
BODY: dict[str, object] = {
    "model": "auto",
    "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
    "max_tokens": 64,
}
# The same request in the two translated APIs (measured through the same sidecar).
RESPONSES_BODY: dict[str, object] = {
    "model": "auto",
    "instructions": SYSTEM,
    "input": USER,
    "max_output_tokens": 64,
}
MESSAGES_BODY: dict[str, object] = {
    "model": "auto",
    "system": SYSTEM,
    "messages": [{"role": "user", "content": USER}],
    "max_tokens": 64,
}
APIS = {
    "chat": ("/v1/chat/completions", BODY),
    "responses": ("/v1/responses", RESPONSES_BODY),
    "messages": ("/v1/messages", MESSAGES_BODY),
}
CONCURRENCY = 32
HIGH_CONCURRENCY = 128


@dataclass
class Figures:
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rps: float = 0.0
    rps_high: float = 0.0  # at HIGH_CONCURRENCY
    ttfb_ms: float = 0.0
    cpu_ms: float = 0.0
    rss_mb: float = 0.0
    private_mb: float = 0.0  # idle, the pages no other process shares
    rss_load_mb: float = 0.0  # the most seen right after a throughput round
    ready_s: float = 0.0


@dataclass
class Target:
    """One thing to measure: the upstream itself or a proxy in front of it."""

    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    body: dict[str, object] = field(default_factory=lambda: BODY)
    figures: Figures = field(default_factory=Figures)
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    rounds_rps: list[float] = field(default_factory=list)
    rounds_rps_high: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    requests: int = 0


async def latencies(
    http: aiohttp.ClientSession, url: str, n: int, body: dict[str, object] = BODY
) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        async with http.post(url, json=body, headers=AUTH) as resp:
            await resp.read()
            assert resp.status == 200, await resp.text()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def ttfb(
    http: aiohttp.ClientSession, url: str, n: int, body: dict[str, object] = BODY
) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        async with http.post(url, json={**body, "stream": True}, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            await resp.content.readany()
            out.append((time.perf_counter() - t) * 1000)
            await resp.read()
    return out


async def throughput(
    http: aiohttp.ClientSession,
    url: str,
    total: int,
    concurrency: int,
    body: dict[str, object] = BODY,
) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with http.post(url, json=body, headers=AUTH) as resp:
                await resp.read()
                assert resp.status == 200, await resp.text()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - t)


async def measure(targets: list[Target], load: OtherLoad, n: int, rounds: int) -> None:
    """Interleaved rounds over all targets; ``load`` measures the other load meanwhile.

    The client pools are per proxy process, not per target: the sidecar's three APIs
    are one process, and three pools would hold three times the minimal proxy's
    keep-alive connections open to it (~16 KB of RSS each)."""
    process = {t.name: t.proc.pid if t.proc is not None else t.name for t in targets}
    owners = set(process.values())
    idle = {owner: aiohttp.ClientSession() for owner in owners}
    pools = {
        owner: (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)),
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=HIGH_CONCURRENCY)),
        )
        for owner in owners
    }
    sessions = {t.name: idle[process[t.name]] for t in targets}
    loaded = {t.name: pools[process[t.name]][0] for t in targets}
    crowded = {t.name: pools[process[t.name]][1] for t in targets}
    try:
        for t in targets:  # warm-up: connections, caches, first-call costs
            await latencies(sessions[t.name], t.url, 50, t.body)
            await ttfb(sessions[t.name], t.url, 10, t.body)
            await throughput(loaded[t.name], t.url, 2 * CONCURRENCY, CONCURRENCY, t.body)
            await throughput(crowded[t.name], t.url, 2 * HIGH_CONCURRENCY, HIGH_CONCURRENCY, t.body)
        await asyncio.sleep(0.5)  # deliberate pacing: let the warm-up settle
        per_round = max(1, n // rounds)
        with load:
            for _ in range(rounds):
                for t in targets:
                    t.latencies += await latencies(sessions[t.name], t.url, per_round, t.body)
                    t.ttfbs += await ttfb(sessions[t.name], t.url, max(1, per_round // 2), t.body)
                for t in targets:
                    total = 4 * per_round
                    before = cpu_seconds(t.proc.pid) if t.proc is not None else 0.0
                    t.rounds_rps.append(
                        await throughput(loaded[t.name], t.url, total, CONCURRENCY, t.body)
                    )
                    t.rounds_rps_high.append(
                        await throughput(crowded[t.name], t.url, total, HIGH_CONCURRENCY, t.body)
                    )
                    if t.proc is not None:
                        t.cpu_s += cpu_seconds(t.proc.pid) - before
                        t.figures.rss_load_mb = max(t.figures.rss_load_mb, rss_mb(t.proc.pid))
                    t.requests += 2 * total
    finally:
        for http in {*sessions.values(), *loaded.values(), *crowded.values()}:
            await http.close()
    for t in targets:
        f = t.figures
        f.p50_ms, f.p99_ms = statistics.median(t.latencies), pct(t.latencies, 99)
        f.ttfb_ms = statistics.median(t.ttfbs)
        f.rps = statistics.median(t.rounds_rps)
        f.rps_high = statistics.median(t.rounds_rps_high)
        f.cpu_ms = t.cpu_s * 1000 / t.requests


# The rows of the table: label, target name. LiteLLM's and Go's only when measured.
ROWS = (("minimal", "minimal"), ("aegis", "sidecar"), ("litellm", "litellm"), ("go floor", "go"))


def report(results: dict[str, Figures], load: OtherLoad) -> dict[str, bool]:
    """Print the table (and the per-API and tracing ones); return the targets checked."""
    direct, base, side = results["direct"], results["minimal"], results["sidecar"]
    rows = [(label, name) for label, name in ROWS if name in results]
    over = {name: results[name].p50_ms - direct.p50_ms for _, name in rows}
    over99 = {name: results[name].p99_ms - direct.p99_ms for _, name in rows}
    ttfbs = {name: results[name].ttfb_ms - direct.ttfb_ms for _, name in rows}
    print("\n== 1. overhead: one call through each proxy (ratios to minimal) ==")
    print(load.report())
    print(
        f"direct to upstream: p50 {direct.p50_ms:.3f} ms, p99 {direct.p99_ms:.3f} ms, "
        f"TTFB {direct.ttfb_ms:.3f} ms (overheads below are over these)\n"
    )
    print(
        f"{'':<10}{'overhead p50 c=1':>22}{'CPU per request':>22}"
        f"{f'req/s c={CONCURRENCY} / c={HIGH_CONCURRENCY}':>32}{'stream TTFB overhead':>24}"
        f"{'RSS idle / load':>18}{'ready':>9}"
    )
    print(
        f"{'direct':<10}{'-':>22}{'-':>22}{f'{direct.rps:,.0f} / {direct.rps_high:,.0f}':>32}"
        f"{'-':>24}{'-':>18}{'-':>9}"
    )
    for label, name in rows:
        f = results[name]
        mine = name != "minimal"
        r_over = f" ({ratio(over[name], over['minimal'])})" if mine else ""
        r_cpu = f" ({ratio(f.cpu_ms, base.cpu_ms)})" if mine else ""
        r_rps = f" ({ratio(f.rps, base.rps)}/{ratio(f.rps_high, base.rps_high)})" if mine else ""
        r_ttfb = f" ({ratio(ttfbs[name], ttfbs['minimal'])})" if mine else ""
        print(
            f"{label:<10}{f'{over[name]:.3f} ms{r_over}':>22}{f'{f.cpu_ms:.3f} ms{r_cpu}':>22}"
            f"{f'{f.rps:,.0f} / {f.rps_high:,.0f}{r_rps}':>32}"
            f"{f'{ttfbs[name]:.3f} ms{r_ttfb}':>24}"
            f"{f'{f.rss_mb:.0f} / {f.rss_load_mb:.0f} MB':>18}{f'{f.ready_s:.2f} s':>9}"
        )
    print(
        "overhead p99 at c=1: "
        + ", ".join(f"{label} {over99[name]:.3f} ms" for label, name in rows)
        + f" (aegis {ratio(over99['sidecar'], over99['minimal'])})"
    )
    print(
        "private memory idle (RSS less the pages shared with other processes, such as the "
        "image's libraries): "
        + ", ".join(f"{label} {results[name].private_mb:.0f} MB" for label, name in rows)
    )
    print("\nper API through the sidecar (same run; overheads over direct chat)")
    print(f"{'figure':<32}{'chat':>12}{'responses':>12}{'messages':>12}")
    apis = [side, results["sidecar responses"], results["sidecar messages"]]
    per_api: list[tuple[str, list[float]]] = [
        ("overhead p50 at c=1 (ms)", [f.p50_ms - direct.p50_ms for f in apis]),
        ("overhead p99 at c=1 (ms)", [f.p99_ms - direct.p99_ms for f in apis]),
        ("stream TTFB overhead (ms)", [f.ttfb_ms - direct.ttfb_ms for f in apis]),
        (f"requests/s at c={CONCURRENCY}, 1 core", [f.rps for f in apis]),
        (f"requests/s at c={HIGH_CONCURRENCY}, 1 core", [f.rps_high for f in apis]),
        ("CPU per request (ms)", [f.cpu_ms for f in apis]),
    ]
    for label, values in per_api:
        print(f"{label:<32}" + "".join(f"{v:>12.3f}" for v in values))
    if "sidecar traced" in results:
        traced = results["sidecar traced"]
        print("\ntracing off / on: two sidecars, same config, measured in the same rounds")
        for label, off, on, unit in (
            ("overhead p50 at c=1", over["sidecar"], traced.p50_ms - direct.p50_ms, "ms"),
            ("overhead p99 at c=1", over99["sidecar"], traced.p99_ms - direct.p99_ms, "ms"),
            ("CPU per request", side.cpu_ms, traced.cpu_ms, "ms"),
            (f"requests/s at c={CONCURRENCY}", side.rps, traced.rps, ""),
            (f"requests/s at c={HIGH_CONCURRENCY}", side.rps_high, traced.rps_high, ""),
            ("RSS idle (imports)", side.rss_mb, traced.rss_mb, "MB"),
            ("RSS under load", side.rss_load_mb, traced.rss_load_mb, "MB"),
            ("ready", side.ready_s, traced.ready_s, "s"),
        ):
            print(f"{label:<32}{off:>12.3f}{on:>12.3f} {unit:<3}{ratio(on, off):>8}")
    return {
        "overhead p50 <= 1.3x minimal": over["sidecar"] <= 1.3 * over["minimal"],
        "CPU per request <= 1.3x minimal": side.cpu_ms <= 1.3 * base.cpu_ms,
        f"requests/s c={CONCURRENCY} >= 0.8x minimal": side.rps >= 0.8 * base.rps,
        f"requests/s c={HIGH_CONCURRENCY} >= 0.8x minimal": side.rps_high >= 0.8 * base.rps_high,
        "stream TTFB overhead <= 1.3x minimal": ttfbs["sidecar"] <= 1.3 * ttfbs["minimal"],
        "RSS idle <= 55 MB": side.rss_mb <= 55,
        "RSS under load <= 70 MB": side.rss_load_mb <= 70,
        "ready <= 0.8 s": side.ready_s <= 0.8,
    }
