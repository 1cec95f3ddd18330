"""Sidecar overhead benchmark: the sidecar next to a minimal aiohttp proxy, same run.

Processes: a fake OpenAI upstream and this load generator share core 0; the proxy
under test (the minimal pass-through, then the sidecar with routing, PII
detection, budget reservation, SQLite ledger and metrics on) runs alone on core 1.
Figures are printed side by side; targets are checked at the end (exit 1 if one
is missed, unless --no-check).

    python tests/bench/sidecar_overhead.py [--quick]
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
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

PY = sys.executable
HERE = Path(__file__).resolve().parent
BODY = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant for the support team."},
        {"role": "user", "content": "Summarise the ticket about the delayed delivery " * 20},
    ],
    "max_tokens": 64,
}
STREAM_BODY = {**BODY, "stream": True}
AUTH = {"Authorization": "Bearer sk-bench"}  # the fake wants a key; proxies ignore it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(cmd: list[str], cpu: int, **kwargs: object) -> subprocess.Popen[bytes]:
    """Start a process pinned to one core (``taskset`` pins it before Python starts)."""
    env = {**os.environ, "AEGIS_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        ["taskset", "-c", str(cpu), *cmd], env=env, **kwargs
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
            await asyncio.sleep(0.005)
    raise RuntimeError(f"{url} not ready after {within}s")


@dataclass
class Figures:
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rps: float = 0.0
    ttfb_ms: float = 0.0
    cpu_ms: float = 0.0
    rss_mb: float = 0.0
    ready_s: float = 0.0


async def latencies(http: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        async with http.post(url, json=BODY, headers=AUTH) as resp:
            await resp.read()
            assert resp.status == 200, await resp.text()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def ttfb(http: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        async with http.post(url, json=STREAM_BODY, headers=AUTH) as resp:
            await resp.content.readany()
            out.append((time.perf_counter() - t) * 1000)
            await resp.read()
    return out


async def throughput(url: str, total: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with http.post(url, json=BODY, headers=AUTH) as resp:
                    await resp.read()

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - t)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


async def measure(proc: subprocess.Popen[bytes], root: str, started: float, n: int) -> Figures:
    f = Figures()
    f.ready_s = await wait_ready(root + "/readyz", started)
    url = root + "/v1/chat/completions"
    async with aiohttp.ClientSession() as http:
        await latencies(http, url, 50)  # warm-up: connections, caches
        await asyncio.sleep(0.5)
        f.rss_mb = rss_mb(proc.pid)
        lat = await latencies(http, url, n)
        f.p50_ms, f.p99_ms = statistics.median(lat), pct(lat, 99)
        f.ttfb_ms = statistics.median(await ttfb(http, url, n // 2))
    before = cpu_seconds(proc.pid)
    total = n * 4
    f.rps = await throughput(url, total, 32)
    f.cpu_ms = (cpu_seconds(proc.pid) - before) * 1000 / total
    return f


def sidecar_config(upstream: str, workdir: Path, port: int) -> Path:
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


async def run(n: int) -> dict[str, Figures]:
    workdir = Path(tempfile.mkdtemp(prefix="aegis-bench-"))
    upstream_port = free_port()
    fake = spawn(
        [PY, "-m", "aegis.sidecar.fakes", "--kind", "openai", "--port", str(upstream_port)],
        cpu=0,
        stdout=subprocess.PIPE,
    )
    procs = [fake]
    results: dict[str, Figures] = {}
    try:
        assert fake.stdout is not None
        upstream = fake.stdout.readline().decode().strip()
        os.environ["BENCH_KEY"] = "sk-bench"
        os.sched_setaffinity(0, {0})
        async with aiohttp.ClientSession() as http:
            t = time.perf_counter()
            lat = await latencies(http, upstream + "/chat/completions", 50)
            lat = await latencies(http, upstream + "/chat/completions", n)
            results["direct"] = Figures(
                statistics.median(lat),
                pct(lat, 99),
                ttfb_ms=statistics.median(await ttfb(http, upstream + "/chat/completions", n // 2)),
            )
            del t
        cases: dict[str, Callable[[int], list[str]]] = {
            "minimal": lambda port: [
                PY,
                str(HERE / "minimal_proxy.py"),
                "--upstream",
                upstream,
                "--port",
                str(port),
            ],
            "sidecar": lambda port: [
                PY,
                "-m",
                "aegis.operator.cli",
                "sidecar",
                "--config",
                str(sidecar_config(upstream, workdir, port)),
            ],
        }
        for name, command in cases.items():
            port = free_port()
            started = time.perf_counter()
            proc = spawn(command(port), cpu=1)
            procs.append(proc)
            results[name] = await measure(proc, f"http://127.0.0.1:{port}", started, n)
            proc.terminate()
            proc.wait(10)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    return results


def report(results: dict[str, Figures], check: bool) -> int:
    direct, base, side = results["direct"], results["minimal"], results["sidecar"]
    over_base_50, over_side_50 = base.p50_ms - direct.p50_ms, side.p50_ms - direct.p50_ms
    over_base_99, over_side_99 = base.p99_ms - direct.p99_ms, side.p99_ms - direct.p99_ms
    ttfb_base, ttfb_side = base.ttfb_ms - direct.ttfb_ms, side.ttfb_ms - direct.ttfb_ms
    rows = [
        ("overhead p50 at c=1 (ms)", over_base_50, over_side_50, "<= 1.3x minimal"),
        ("overhead p99 at c=1 (ms)", over_base_99, over_side_99, "<= 1.3x minimal"),
        ("stream TTFB overhead (ms)", ttfb_base, ttfb_side, "<= 1.3x minimal"),
        ("requests/s at c=32, 1 core", base.rps, side.rps, ">= 0.8x minimal"),
        ("CPU per request (ms)", base.cpu_ms, side.cpu_ms, "<= 0.3 ms"),
        ("idle RSS (MB)", base.rss_mb, side.rss_mb, "<= 60 MB"),
        ("ready after start (s)", base.ready_s, side.ready_s, "<= 1 s"),
    ]
    print(
        f"\ndirect to upstream: p50 {direct.p50_ms:.3f} ms, p99 {direct.p99_ms:.3f} ms, "
        f"TTFB {direct.ttfb_ms:.3f} ms\n"
    )
    print(f"{'figure':<30}{'minimal proxy':>15}{'aegis sidecar':>15}{'ratio':>8}  target")
    for label, b, s, target in rows:
        ratio = s / b if b else float("nan")
        print(f"{label:<30}{b:>15.3f}{s:>15.3f}{ratio:>8.2f}  {target}")
    checks = {
        "overhead p50": over_side_50 <= 1.3 * over_base_50,
        "stream TTFB": ttfb_side <= 1.3 * ttfb_base,
        "throughput": side.rps >= 0.8 * base.rps,
        "CPU per request": side.cpu_ms <= 0.3,
        "idle RSS": side.rss_mb <= 60,
        "ready time": side.ready_s <= 1.0,
    }
    missed = [name for name, ok in checks.items() if not ok]
    print("\ntargets missed: " + (", ".join(missed) if missed else "none"))
    return 1 if check and missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="latency samples per proxy")
    parser.add_argument("--quick", action="store_true", help="200 samples (smoke run)")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even if targets missed")
    args = parser.parse_args()
    n = 200 if args.quick else args.requests
    return report(asyncio.run(run(n)), check=not args.no_check)


if __name__ == "__main__":
    sys.exit(main())
