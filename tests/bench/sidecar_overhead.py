"""Sidecar overhead benchmark: the sidecar next to a minimal aiohttp proxy, same run.

Processes: a fake OpenAI upstream and this load generator share core 0; the proxy
under test (the minimal pass-through, and the sidecar with routing, PII
detection, budget reservation, SQLite ledger and metrics on) runs on core 1.
Figures are printed side by side; targets are checked at the end (exit 1 if one
is missed, unless --no-check). The same request is also sent through the sidecar's
Responses and Messages endpoints, and their figures printed beside chat's.

How it measures, and why:

* Start-up: each proxy is started once untimed, then started again and timed
  until ``/readyz`` answers. The first start fills a bytecode cache (the process
  would otherwise compile every module from source, which an installed package
  never does: pip compiles at install time). The timed sidecar start creates and
  migrates a fresh SQLite ledger, as a new pod does.
* Both proxies stay up, idle one while the other is measured, and the targets
  (direct upstream, minimal proxy, sidecar) are measured in interleaved rounds
  (latency at c=1, stream TTFB, throughput at c=32 and at c=128):
  other work on the machine then slows every target alike instead of whichever
  happened to run at that moment. Latencies are pooled over the rounds; the
  throughput is the median round; CPU per request is the proxy's CPU time over
  all throughput rounds divided by their requests (all threads, so the ledger's
  SQLite thread counts too). RSS idle is taken once the timed start is ready,
  before any request; RSS under load is the most seen after a throughput round.
* Other load on the machine is measured (CPU time no benchmark process used)
  and reported with the load average: rerun when it is high. Ratios of the
  sidecar to the minimal proxy from the same run hold up better than absolute
  figures on a busy machine.

    python tests/bench/sidecar_overhead.py [--quick] [--tracing]

``--tracing`` adds a sidecar with OpenTelemetry traces on (exporting OTLP/HTTP to a
sink in this process) to the same rounds and prints it beside the one with them off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
from tests.controlplane.otelcol import Sink

PY = sys.executable
HERE = Path(__file__).resolve().parent
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
AUTH = {"Authorization": "Bearer sk-bench"}  # the fake wants a key; proxies ignore it
CONCURRENCY = 32
HIGH_CONCURRENCY = 128
# Bytecode for the spawned processes (see the module docstring); kept between runs.
PYCACHE = Path(tempfile.gettempdir()) / "aegis-bench-pycache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(
    cmd: list[str], cpu: int, extra_env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.Popen[bytes]:
    """Start a process pinned to one core (``taskset`` pins it before Python starts)."""
    env = {**os.environ, "AEGIS_LOG_LEVEL": "WARNING", "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    env.update(extra_env or {})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        ["taskset", "-c", str(cpu), *cmd], env=env, **kwargs
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """User and system CPU time of all processes on all cores (from ``/proc/stat``;
    interrupt time is left out: the loopback traffic of this benchmark causes it)."""
    user, nice, system = (int(v) for v in Path("/proc/stat").read_text().split()[1:4])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def wait_ready(url: str, started: float, within: float = 30.0) -> float:
    async with aiohttp.ClientSession() as http:
        while time.perf_counter() - started < within:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.005)  # poll until ready, within the deadline above
    raise RuntimeError(f"{url} not ready after {within}s")


@dataclass
class Figures:
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rps: float = 0.0
    rps_high: float = 0.0  # at HIGH_CONCURRENCY
    ttfb_ms: float = 0.0
    cpu_ms: float = 0.0
    rss_mb: float = 0.0
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


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def sidecar_config(upstream: str, workdir: Path, port: int) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    doc = {
        "identity": {"route": "bench", "namespace": "bench"},
        "providers": [
            {
                "name": "local",
                "type": "ollama",
                "baseURL": upstream.removesuffix("/v1"),
                "models": {"default": "gemma3:4b"},
            },
            {
                "name": "openai",
                "type": "openai",
                "baseURL": upstream,
                "apiKeyEnv": "BENCH_KEY",
                "models": {"default": "gpt-4o-mini"},
            },
        ],
        "rules": [
            {"name": "sensitive", "match": {"dataClass": ["pii"]}, "to": {"provider": "local"}}
        ],
        "default": {"provider": "openai"},
        "fallback": ["local"],
        "budgets": [{"name": "openai", "provider": "openai", "limitUSD": "1000000"}],
        "ledger": {"url": f"sqlite+aiosqlite:///{workdir / 'ledger.db'}"},
        "listen": {"port": port, "metricsPort": free_port()},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def start(
    command: Callable[[int, str], list[str]], name: str, env: dict[str, str] | None = None
) -> tuple[Target, float]:
    """Start a proxy untimed (fills the bytecode cache), stop it, start it timed."""
    for attempt in ("warm-up", "timed"):
        port = free_port()
        started = time.perf_counter()
        proc = spawn(command(port, attempt), cpu=1, extra_env=env)
        try:
            ready = await wait_ready(f"http://127.0.0.1:{port}/readyz", started)
        except BaseException:
            proc.terminate()
            proc.wait(10)
            raise
        if attempt == "timed":
            target = Target(name, f"http://127.0.0.1:{port}/v1/chat/completions", proc)
            return target, ready
        proc.terminate()
        proc.wait(10)
    raise AssertionError("unreachable")


async def measure(targets: list[Target], upstream_pid: int, n: int, rounds: int) -> float:
    """Interleaved rounds over all targets; returns other load in cores (0..2)."""
    own = [os.getpid(), upstream_pid, *{t.proc.pid for t in targets if t.proc is not None}]
    sessions = {t.name: aiohttp.ClientSession() for t in targets}
    loaded = {
        t.name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))
        for t in targets
    }
    crowded = {
        t.name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=HIGH_CONCURRENCY))
        for t in targets
    }
    try:
        for t in targets:  # warm-up: connections, caches, first-call costs
            await latencies(sessions[t.name], t.url, 50, t.body)
            await ttfb(sessions[t.name], t.url, 10, t.body)
            await throughput(loaded[t.name], t.url, 2 * CONCURRENCY, CONCURRENCY, t.body)
            await throughput(crowded[t.name], t.url, 2 * HIGH_CONCURRENCY, HIGH_CONCURRENCY, t.body)
        await asyncio.sleep(0.5)  # deliberate pacing: let the warm-up settle
        busy0, mine0 = machine_busy_seconds(), sum(cpu_seconds(p) for p in own)
        wall0 = time.perf_counter()
        per_round = max(1, n // rounds)
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
        wall = time.perf_counter() - wall0
        foreign = (machine_busy_seconds() - busy0) - (sum(cpu_seconds(p) for p in own) - mine0)
    finally:
        for http in [*sessions.values(), *loaded.values(), *crowded.values()]:
            await http.close()
    for t in targets:
        f = t.figures
        f.p50_ms, f.p99_ms = statistics.median(t.latencies), pct(t.latencies, 99)
        f.ttfb_ms = statistics.median(t.ttfbs)
        f.rps = statistics.median(t.rounds_rps)
        f.rps_high = statistics.median(t.rounds_rps_high)
        f.cpu_ms = t.cpu_s * 1000 / t.requests
    return max(0.0, foreign / wall)


async def run(n: int, rounds: int, tracing: bool = False) -> tuple[dict[str, Figures], float]:
    workdir = Path(tempfile.mkdtemp(prefix="aegis-bench-"))
    # --tracing: one more sidecar with OpenTelemetry on, exporting OTLP/HTTP to a sink in
    # this process (its CPU is the load generator's, not the sidecar's).
    sink = Sink() if tracing else None
    upstream_port = free_port()
    fake = spawn(
        [PY, "-m", "aegis.sidecar.fakes", "--kind", "openai", "--port", str(upstream_port)],
        cpu=0,
        stdout=subprocess.PIPE,
    )
    targets: list[Target] = []
    try:
        assert fake.stdout is not None
        upstream = fake.stdout.readline().decode().strip()
        os.environ["BENCH_KEY"] = "sk-bench"
        os.sched_setaffinity(0, {0})
        cases: dict[str, Callable[[int, str], list[str]]] = {
            "minimal": lambda port, _attempt: [
                PY,
                str(HERE / "minimal_proxy.py"),
                "--upstream",
                upstream,
                "--port",
                str(port),
            ],
            # Each start gets its own ledger: the timed one creates and migrates it.
            "sidecar": lambda port, attempt: [
                PY,
                "-m",
                "aegis.operator.cli",
                "sidecar",
                "--config",
                str(sidecar_config(upstream, workdir / attempt, port)),
            ],
        }
        targets.append(Target("direct", upstream + "/chat/completions"))
        for name, command in cases.items():
            target, ready = await start(command, name)
            target.figures.ready_s = ready
            assert target.proc is not None
            target.figures.rss_mb = rss_mb(target.proc.pid)  # idle: ready, nothing served
            targets.append(target)
        # The translated APIs through the same sidecar process.
        side = targets[-1]
        root = side.url.removesuffix(APIS["chat"][0])
        for api in ("responses", "messages"):
            path, body = APIS[api]
            targets.append(Target(f"sidecar {api}", root + path, side.proc, body))
        if sink is not None:
            otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_SERVICE_NAME": "bench"}
            traced, ready = await start(
                lambda port, attempt: cases["sidecar"](port, f"traced-{attempt}"),
                "sidecar traced",
                otel,
            )
            traced.figures.ready_s = ready
            assert traced.proc is not None
            traced.figures.rss_mb = rss_mb(traced.proc.pid)
            targets.append(traced)
        background = await measure(targets, fake.pid, n, rounds)
        if sink is not None:
            await asyncio.sleep(6)  # deliberate pacing: the exporter's 5 s batch delay
            print(f"\nspans exported by the traced sidecar: {len(sink.all()):,}")
            sink.close()
    finally:
        for proc in [fake, *(t.proc for t in targets if t.proc is not None)]:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    return {t.name: t.figures for t in targets}, background


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


def report(results: dict[str, Figures], background: float, check: bool) -> int:
    direct, base, side = results["direct"], results["minimal"], results["sidecar"]
    over = {name: results[name].p50_ms - direct.p50_ms for name in ("minimal", "sidecar")}
    over99 = {name: results[name].p99_ms - direct.p99_ms for name in ("minimal", "sidecar")}
    ttfb = {name: results[name].ttfb_ms - direct.ttfb_ms for name in ("minimal", "sidecar")}
    load1, load5, _ = os.getloadavg()
    print(
        f"\nother load on the machine while measuring: {background:.2f} cores "
        f"(load average {load1:.2f} / {load5:.2f} over 1 / 5 min at the end)"
    )
    print(
        f"direct to upstream: p50 {direct.p50_ms:.3f} ms, p99 {direct.p99_ms:.3f} ms, "
        f"TTFB {direct.ttfb_ms:.3f} ms (overheads below are over these)\n"
    )
    head = (
        f"{'':<14}{'overhead p50 c=1':>22}{'CPU per request':>22}"
        f"{f'req/s c={CONCURRENCY} / c={HIGH_CONCURRENCY}':>30}{'stream TTFB overhead':>24}"
        f"{'RSS idle / load':>18}{'ready':>9}"
    )
    print(head)
    print(
        f"{'direct':<14}{'-':>22}{'-':>22}{f'{direct.rps:,.0f} / {direct.rps_high:,.0f}':>30}"
        f"{'-':>24}{'-':>18}{'-':>9}"
    )
    for label, name in (("minimal", "minimal"), ("aegis", "sidecar")):
        f = results[name]
        mine = name == "sidecar"
        r_over = f" ({_ratio(over[name], over['minimal'])})" if mine else ""
        r_cpu = f" ({_ratio(f.cpu_ms, base.cpu_ms)})" if mine else ""
        r_rps = f" ({_ratio(f.rps, base.rps)}/{_ratio(f.rps_high, base.rps_high)})" if mine else ""
        r_ttfb = f" ({_ratio(ttfb[name], ttfb['minimal'])})" if mine else ""
        print(
            f"{label:<14}{f'{over[name]:.3f} ms{r_over}':>22}{f'{f.cpu_ms:.3f} ms{r_cpu}':>22}"
            f"{f'{f.rps:,.0f} / {f.rps_high:,.0f}{r_rps}':>30}"
            f"{f'{ttfb[name]:.3f} ms{r_ttfb}':>24}"
            f"{f'{f.rss_mb:.0f} / {f.rss_load_mb:.0f} MB':>18}{f'{f.ready_s:.2f} s':>9}"
        )
    print(
        f"overhead p99 at c=1: minimal {over99['minimal']:.3f} ms, aegis "
        f"{over99['sidecar']:.3f} ms ({_ratio(over99['sidecar'], over99['minimal'])})"
    )
    checks = {
        "overhead p50 <= 1.3x minimal": over["sidecar"] <= 1.3 * over["minimal"],
        "CPU per request <= 1.3x minimal": side.cpu_ms <= 1.3 * base.cpu_ms,
        f"requests/s c={CONCURRENCY} >= 0.8x minimal": side.rps >= 0.8 * base.rps,
        f"requests/s c={HIGH_CONCURRENCY} >= 0.8x minimal": side.rps_high >= 0.8 * base.rps_high,
        "stream TTFB overhead <= 1.3x minimal": ttfb["sidecar"] <= 1.3 * ttfb["minimal"],
        "RSS idle <= 55 MB": side.rss_mb <= 55,
        "RSS under load <= 70 MB": side.rss_load_mb <= 70,
        "ready <= 0.8 s": side.ready_s <= 0.8,
    }
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
    missed = [name for name, ok in checks.items() if not ok]
    if background > 0.25:
        print(f"\nwarning: other processes used {background:.2f} cores; rerun when quiet")
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
            print(f"{label:<32}{off:>12.3f}{on:>12.3f} {unit:<3}{_ratio(on, off):>8}")
    print("\ntargets missed: " + ("; ".join(missed) if missed else "none"))
    return 1 if check and missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="latency samples per target")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="200 samples (smoke run)")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even if targets missed")
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also a sidecar with OpenTelemetry traces on, printed beside the one with them off",
    )
    args = parser.parse_args()
    n = 200 if args.quick else args.requests
    results, background = asyncio.run(run(n, args.rounds, args.tracing))
    return report(results, background, check=not args.no_check)


if __name__ == "__main__":
    sys.exit(main())
