"""What the proxy benchmark's tables share: processes pinned to a core, their CPU time
and memory, readiness, the machine's other load, the fake upstream and the sidecar's
config.

Processes: the fake OpenAI upstream and the load generator share core 0; every proxy
under test runs on core 1 (``taskset`` pins it before Python starts), so proxies
compete for one core the same way, one at a time (the others stay idle meanwhile).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.controlplane.procs import memory_kib

PY = sys.executable
HERE = Path(__file__).resolve().parent
AUTH = {"Authorization": "Bearer sk-bench"}  # the fake wants a key; proxies ignore it
LOAD_CORE, PROXY_CORE = 0, 1
# Bytecode for the spawned processes, kept between runs: an installed package is
# compiled at install time, so a start that compiles every module would mislead.
PYCACHE = Path(tempfile.gettempdir()) / "aegis-bench-pycache"


def free_port() -> int:
    """A free loopback port; a proxy that lost it to another process fails to get
    ready and the run stops with its error (a benchmark, not a test: no retry)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(
    cmd: list[str], cpu: int, extra_env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """Start a process pinned to one core."""
    env = {**os.environ, "AEGIS_LOG_LEVEL": "WARNING", "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    env.update(extra_env or {})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.Popen(["taskset", "-c", str(cpu), *cmd], env=env, **kwargs)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(*roots: int) -> float:
    """CPU time of processes and all their descendants (each counted once), those they
    have reaped included (PostgreSQL's backends: one per connection)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = sum(int(v) for v in fields[11:15])  # self + reaped children
    tree, grew = set(roots), True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        grew = bool(more)
        tree |= more
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """From one read of ``/proc/stat``, all cores: the user and system CPU time of all
    processes (interrupt time is left out: the loopback traffic of this benchmark
    causes it), and the time the hypervisor gave to other guests while this one's
    vCPUs were runnable (steal; 0 on bare metal)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split()[1:9]]
    user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system) / tick, steal / tick


def rss_mb(pid: int) -> float:
    kib = memory_kib(pid).get("VmRSS")
    return float("nan") if kib is None else kib / 1024


def private_mb(pid: int) -> float:
    """Memory only this process holds (``smaps_rollup``'s private pages): what one more
    pod costs a node, the pages of the shared image files left out."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


class OtherLoad:
    """The machine's other load while a table is measured: CPU time that no process
    of the benchmark used (``pids`` and their descendants), and on a virtual machine
    the time the hypervisor took for other guests (steal), in cores."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids
        self.cores = 0.0
        self.steal = 0.0

    def _mine(self) -> float:
        return tree_cpu_seconds(os.getpid(), *self._pids())

    def __enter__(self) -> OtherLoad:
        (self._busy, self._stolen), self._own = machine_cpu_seconds(), self._mine()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        wall = time.perf_counter() - self._wall
        busy, stolen = machine_cpu_seconds()
        foreign = (busy - self._busy) - (self._mine() - self._own)
        self.cores = max(0.0, foreign / wall)
        self.steal = (stolen - self._stolen) / wall

    def report(self) -> str:
        load1, load5, _ = os.getloadavg()
        line = (
            f"other load on the machine while measuring: {self.cores:.2f} cores, "
            f"{self.steal:.2f} taken by the hypervisor "
            f"(load average {load1:.2f} / {load5:.2f} over 1 / 5 min at the end)"
        )
        if self.cores > 0.25:
            line += f"\nwarning: other processes used {self.cores:.2f} cores; rerun when quiet"
        if self.steal > 0.1:
            line += f"\nwarning: the hypervisor took {self.steal:.2f} cores; rerun when quiet"
        return line


async def wait_ready(url: str, started: float, within: float = 60.0) -> float:
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


async def start_timed(
    command: Callable[[int, str], list[str]],
    ready_path: str = "/readyz",
    env: dict[str, str] | None = None,
    within: float = 60.0,
    warm_up: bool = True,
    **spawn_kwargs: Any,
) -> tuple[subprocess.Popen[bytes], int, float]:
    """Start a proxy untimed (fills the bytecode cache), stop it, start it again timed
    until ``ready_path`` answers 200; returns the process, its port and the seconds.
    ``warm_up=False``: one start only (the cache is already filled)."""
    for attempt in ("warm-up", "timed") if warm_up else ("timed",):
        port = free_port()
        started = time.perf_counter()
        proc = spawn(command(port, attempt), cpu=PROXY_CORE, extra_env=env, **spawn_kwargs)
        try:
            ready = await wait_ready(f"http://127.0.0.1:{port}{ready_path}", started, within)
        except BaseException:
            stop(proc)
            raise
        if attempt == "timed":
            return proc, port, ready
        stop(proc)
    raise AssertionError("unreachable")


def pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[int(q) - 1]


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


def start_fake() -> tuple[subprocess.Popen[bytes], str]:
    """The fake OpenAI upstream on the load core; returns it and its ``…/v1`` URL."""
    fake = spawn(
        [PY, "-m", "aegis.sidecar.fakes", "--kind", "openai", "--port", str(free_port())],
        cpu=LOAD_CORE,
        stdout=subprocess.PIPE,
    )
    assert fake.stdout is not None
    return fake, fake.stdout.readline().decode().strip()


async def set_knobs(upstream: str, knobs: dict[str, Any]) -> None:
    """Steer the fake upstream (its process) through ``POST /_fake/knobs``."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(upstream.removesuffix("/v1") + "/_fake/knobs", data=json.dumps(knobs)) as resp,
    ):
        assert resp.status == 200, await resp.text()


def sidecar_document(upstream: str, port: int, ledger_url: str) -> dict[str, Any]:
    """A production-like config: routing with a PII rule, a fallback, a priced budget
    with a limit, the ledger and metrics on."""
    return {
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
        "ledger": {"url": ledger_url},
        "listen": {"port": port, "metricsPort": free_port()},
    }


def sidecar_config(upstream: str, workdir: Path, port: int, ledger_url: str | None = None) -> Path:
    """Write :func:`sidecar_document` (a SQLite ledger in ``workdir`` by default)."""
    workdir.mkdir(parents=True, exist_ok=True)
    url = ledger_url or f"sqlite+aiosqlite:///{workdir / 'ledger.db'}"
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(sidecar_document(upstream, port, url)))
    return path


def sidecar_command(config: Path) -> list[str]:
    return [PY, "-m", "aegis.operator.cli", "sidecar", "--config", str(config)]


def minimal_command(upstream: str, port: int) -> list[str]:
    return [PY, str(HERE / "minimal_proxy.py"), "--upstream", upstream, "--port", str(port)]
