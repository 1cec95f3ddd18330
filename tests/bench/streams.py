"""The second table: many streams at once through each proxy.

Each round opens ``STREAMS`` streams at once on every target in turn (the targets
interleaved round by round, as in the first table); every stream carries ``CHUNKS``
chunks from the fake upstream (a fixed reply of ``CHUNKS - 2`` words, its ``reply``
knob: one chunk per word between the role chunk and the finishing one), sent
``chunk_delay_ms`` apart.
Chunks/s is the upstream's chunks relayed to the clients over the wall time of the
round's streams (median round); CPU per chunk is the proxy's CPU time over all rounds
divided by the chunks it relayed.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from dataclasses import dataclass, field

import aiohttp

from tests.bench.harness import AUTH, OtherLoad, cpu_seconds, ratio, rss_mb, set_knobs
from tests.bench.overhead import BODY, ROWS

STREAMS = 100
CHUNKS = 200
STREAM_BODY: dict[str, object] = {**BODY, "max_tokens": 4 * CHUNKS, "stream": True}


@dataclass
class StreamTarget:
    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    rounds: list[float] = field(default_factory=list)  # chunks/s per round
    cpu_s: float = 0.0
    chunks: int = 0
    rss_load_mb: float = 0.0


async def one_stream(http: aiohttp.ClientSession, url: str) -> int:
    """One whole stream; returns how many content events it carried."""
    async with http.post(url, json=STREAM_BODY, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.read()
    return body.count(b'"content":')


async def streams_round(http: aiohttp.ClientSession, target: StreamTarget) -> None:
    before = cpu_seconds(target.proc.pid) if target.proc is not None else 0.0
    t = time.perf_counter()
    carried = await asyncio.gather(*(one_stream(http, target.url) for _ in range(STREAMS)))
    wall = time.perf_counter() - t
    # Every word arrived (the role chunk has content "" too; the finishing chunk may not).
    assert min(carried) >= CHUNKS - 1, f"{target.name}: a stream carried {min(carried)} chunks"
    target.rounds.append(STREAMS * CHUNKS / wall)
    target.chunks += STREAMS * CHUNKS
    if target.proc is not None:
        target.cpu_s += cpu_seconds(target.proc.pid) - before
        target.rss_load_mb = max(target.rss_load_mb, rss_mb(target.proc.pid))


async def measure(
    targets: list[StreamTarget],
    load: OtherLoad,
    upstream: str,
    rounds: int,
    chunk_delay_ms: float,
) -> None:
    # Words that differ: LiteLLM cuts a stream that repeats one chunk (a looping model).
    reply = " ".join(f"w{i}" for i in range(CHUNKS - 2))
    await set_knobs(upstream, {"reply": reply, "chunk_delay_ms": chunk_delay_ms})
    sessions = {
        t.name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=STREAMS))
        for t in targets
    }
    try:
        for t in targets:  # warm-up: connections and first-call costs, not counted
            await asyncio.gather(*(one_stream(sessions[t.name], t.url) for _ in range(10)))
        with load:
            for _ in range(rounds):
                for t in targets:
                    await streams_round(sessions[t.name], t)
    finally:
        for http in sessions.values():
            await http.close()
        await set_knobs(upstream, {"reply": None, "chunk_delay_ms": 0.0})


def report(targets: list[StreamTarget], load: OtherLoad, chunk_delay_ms: float) -> dict[str, bool]:
    by = {t.name: t for t in targets}
    base = by["minimal"]
    cpu_us = {t.name: 1e6 * t.cpu_s / t.chunks for t in targets if t.proc is not None}
    print(
        f"\n== 2. streams: {STREAMS} at once x {CHUNKS} chunks "
        f"({chunk_delay_ms:g} ms apart at the upstream) ==",
    )
    print(load.report())
    print(f"{'':<10}{'chunks/s relayed':>22}{'CPU per chunk':>22}{'RSS under load':>16}")
    for label, name in (("direct", "direct"), *ROWS):
        if name not in by:
            continue
        t = by[name]
        rate = statistics.median(t.rounds)
        mine = name not in ("direct", "minimal")
        r_rate = f" ({ratio(rate, statistics.median(base.rounds))})" if mine else ""
        cpu = "-"
        if name in cpu_us:
            r_cpu = f" ({ratio(cpu_us[name], cpu_us['minimal'])})" if mine else ""
            cpu = f"{cpu_us[name]:.1f} us{r_cpu}"
        rss = f"{t.rss_load_mb:.0f} MB" if t.proc is not None else "-"
        print(f"{label:<10}{f'{rate:,.0f}{r_rate}':>22}{cpu:>22}{rss:>16}")
    return {"stream CPU per chunk <= 1.3x minimal": cpu_us["sidecar"] <= 1.3 * cpu_us["minimal"]}
