"""The fourth table: what each feature of the benchmark's config costs, and what the
sidecar costs with all of them off.

The same sidecar is started with the production-like config of the other tables
(:func:`~tests.bench.harness.sidecar_document`) and with one feature taken out at a
time: privacy detection (``privacy.detect: false``), the priced budget, the routing
rule and fallback; then with all three out (the request still parsed and validated,
routed to the default provider, recorded in the ledger and counted in the metrics,
which no config turns off). The minimal pass-through runs beside them. Interleaved
rounds, as the first table: latency at c=1, then a burst at c=32 over which the
proxy's CPU time is read. A feature's cost is the all-on CPU per request minus its
own row's; what is left over the minimal with everything off is the sidecar's
frame (its HTTP handling, upstream call, headers, ledger row and metrics).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.bench.harness import (
    OtherLoad,
    cpu_seconds,
    minimal_command,
    sidecar_command,
    sidecar_document,
    start_timed,
    stop,
)
from tests.bench.overhead import CONCURRENCY, latencies, throughput

Config = dict[str, Any]


def _no_detection(doc: Config) -> Config:
    return {**doc, "privacy": {"detect": False}}


def _no_budget(doc: Config) -> Config:
    return {**doc, "budgets": []}


def _no_rules(doc: Config) -> Config:
    return {**doc, "rules": [], "fallback": []}


def _all_off(doc: Config) -> Config:
    return _no_rules(_no_budget(_no_detection(doc)))


# (row name, how its config differs from the benchmark's); None: the minimal proxy.
VARIANTS: list[tuple[str, Callable[[Config], Config] | None]] = [
    ("minimal", None),
    ("all on", lambda doc: doc),
    ("no detection", _no_detection),
    ("no budget", _no_budget),
    ("no rules", _no_rules),
    ("all off", _all_off),
]


@dataclass
class Variant:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    requests: int = 0

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.cpu_s / self.requests if self.requests else float("nan")


async def _start(upstream: str, workdir: Path) -> list[Variant]:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    variants: list[Variant] = []
    try:
        for name, change in VARIANTS:

            def command(
                port: int, attempt: str, name: str = name, change: Any = change
            ) -> list[str]:
                if change is None:
                    return minimal_command(upstream, port)
                slug = name.replace(" ", "-")
                ledger = f"sqlite+aiosqlite:///{workdir / f'{slug}-{attempt}.db'}"
                path = workdir / f"{slug}-{attempt}.yaml"
                path.write_text(yaml.safe_dump(change(sidecar_document(upstream, port, ledger))))
                return sidecar_command(path)

            proc, port, _ = await start_timed(command, warm_up=False)
            variants.append(Variant(name, proc, f"http://127.0.0.1:{port}/v1/chat/completions"))
    except BaseException:
        for v in variants:
            stop(v.proc)
        raise
    return variants


async def measure(
    upstream: str, fake_pid: int, workdir: Path, n: int, rounds: int
) -> tuple[list[Variant], OtherLoad]:
    """Start the variants and measure them, with the upstream directly (its latency
    is what the overheads are over), in interleaved rounds."""
    variants = await _start(upstream, workdir)
    load = OtherLoad(lambda: [fake_pid, *(v.proc.pid for v in variants if v.proc is not None)])
    direct = Variant("direct", url=upstream + "/chat/completions")
    per_round = max(1, n // rounds)
    try:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as http:
            for v in variants:  # warm-up: connections, caches
                await throughput(http, v.url, 200, CONCURRENCY)
            with load:
                for _ in range(rounds):
                    direct.latencies += await latencies(http, direct.url, per_round)
                    for v in variants:
                        assert v.proc is not None
                        v.latencies += await latencies(http, v.url, per_round)
                        before = cpu_seconds(v.proc.pid)
                        await throughput(http, v.url, 4 * per_round, CONCURRENCY)
                        v.cpu_s += cpu_seconds(v.proc.pid) - before
                        v.requests += 4 * per_round
    finally:
        for v in variants:
            stop(v.proc)
    return [direct, *variants], load


def report(measured: list[Variant], load: OtherLoad) -> None:
    print("\n== 4. features: the sidecar with one feature of the config off at a time ==")
    print(load.report())
    direct, *variants = measured
    direct_p50_ms = statistics.median(direct.latencies)
    rows = {v.name: v for v in variants}
    minimal, all_on = rows["minimal"], rows["all on"]
    print(f"{'':<16}{'overhead p50 c=1':>18}{'CPU per request':>22}{'the feature costs':>20}")
    for v in variants:
        p50 = statistics.median(v.latencies) - direct_p50_ms
        ratio = f" ({v.cpu_us / minimal.cpu_us:.2f}x)" if v is not minimal else ""
        cost = "-"
        if v.name.startswith("no "):
            cost = f"{all_on.cpu_us - v.cpu_us:+.0f} us"
        elif v.name == "all off":
            cost = f"{all_on.cpu_us - v.cpu_us:+.0f} us (all three)"
        print(f"{v.name:<16}{f'{p50:.3f} ms':>18}{f'{v.cpu_us:.0f} us{ratio}':>22}{cost:>20}")
    frame = rows["all off"].cpu_us - minimal.cpu_us
    print(
        f"(CPU ratios to minimal; the sidecar's frame, all features off, over minimal: "
        f"{frame:+.0f} us a request)"
    )
