"""Where the sidecar's CPU goes per request: py-spy under the benchmark's load.

The sidecar (the benchmark's production-like config: routing with a PII rule, a
priced budget, the SQLite ledger, metrics) runs pinned to its core as in
``make bench``; this process drives it (at c=32 unless told) from the other core while
``py-spy record`` samples it. The samples are then printed as microseconds per
request (the share of samples times the CPU per request measured from ``/proc``
over the same window): by function (self time), and by component (the package or
the sidecar sub-package of the innermost frame).

``--gil`` (the default) samples only the thread holding the GIL: with every thread
of the sidecar on one core, a thread that is runnable but waiting for the core (or
for the GIL) would otherwise be counted as busy at whatever line it stopped on.
C work that releases the GIL (SQLite's steps on aiosqlite's thread, socket writes
inside uvloop) is then missing from the attribution but not from the CPU figure.

    python tests/bench/profile_sidecar.py [--seconds 20] [--concurrency 32]
        [--all-threads] [--minimal] [--streams] [--raw FILE]

``--concurrency 1`` profiles the load behind the first table's latency figures (one
request at a time, the core idle between them). ``--minimal`` profiles the baseline
pass-through the same way, to tell the aiohttp cost every proxy pays from the
sidecar's own. ``--streams`` drives the second table's load instead (rounds of
``STREAMS`` streams at once) and shares the CPU out per relayed chunk.

Needs ``py-spy`` (``pip install py-spy``) and the permission to trace a child
process (``ptrace``), as in a container with ``SYS_PTRACE`` or as root.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
from tests.bench import harness
from tests.bench.overhead import CONCURRENCY, throughput
from tests.bench.streams import CHUNKS, STREAMS, StreamTarget, streams_round

_FRAME = re.compile(r"(?P<function>.*?) \((?P<path>.*?):\d+\)$")
_SITE = re.compile(r".*/site-packages/|.*/lib/python3\.\d+/|.*/aegis/")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


def component(path: str) -> str:
    """``aiohttp``, ``asyncio``, ``sidecar/request``…: where a frame's code lives
    (py-spy names files from their package: ``aiohttp/client.py``)."""
    parts = _SITE.sub("", path).split("/")
    if len(parts) > 1 and parts[0] == "sidecar":
        return "/".join(parts[:2]).removesuffix(".py")
    return parts[0].removesuffix(".py")


def summarise(raw: Path, cpu_us: float, top: int, unit: str = "request") -> None:
    """Self time per function and per component, in microseconds per ``unit``."""
    by_function: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        match = _FRAME.match(stack.rsplit(";", 1)[-1])
        if match is None:
            by_function["(native)"] += samples
            by_component["(native)"] += samples
            continue
        where = component(match["path"])
        by_function[f"{match['function']}  [{where}]"] += samples
        by_component[where] += samples
    if not total:
        raise SystemExit("py-spy recorded no samples")
    print(f"\n{total:,} samples; CPU per {unit} {cpu_us:.1f} us, shared out by samples")
    print("\nby component (innermost frame)")
    for name, samples in by_component.most_common(top):
        print(f"{samples / total * cpu_us:8.1f} us  {samples / total:6.1%}  {name}")
    print("\nby function (self)")
    for name, samples in by_function.most_common(top):
        print(f"{samples / total * cpu_us:8.1f} us  {samples / total:6.1%}  {name}")


def spy_command(pid: int, args: argparse.Namespace) -> list[str]:
    record = [py_spy(), "record", "--pid", str(pid), "--rate", str(args.rate)]
    record += ["--duration", str(args.seconds), "--format", "raw", "-o", str(args.raw)]
    return record + ["--nonblocking"] + ([] if args.all_threads else ["--gil"])


async def profile_requests(
    proc: subprocess.Popen[bytes], url: str, args: argparse.Namespace
) -> None:
    concurrency = args.concurrency
    batch = 20 * max(concurrency, 32)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await throughput(http, url, batch, concurrency)  # warm-up
        spy = await asyncio.create_subprocess_exec(
            *spy_command(proc.pid, args), stdout=subprocess.DEVNULL
        )
        started, cpu, served = time.monotonic(), harness.cpu_seconds(proc.pid), 0
        while time.monotonic() - started < args.seconds:
            await throughput(http, url, batch, concurrency)
            served += batch
        cpu_us = (harness.cpu_seconds(proc.pid) - cpu) / served * 1e6
        rate = served / (time.monotonic() - started)
        await spy.wait()
    print(f"{served:,} requests at c={concurrency}, {rate:,.0f}/s while sampled")
    summarise(args.raw, cpu_us, args.top)


async def profile_streams(
    proc: subprocess.Popen[bytes], url: str, upstream: str, args: argparse.Namespace
) -> None:
    reply = " ".join(f"w{i}" for i in range(CHUNKS - 2))
    await harness.set_knobs(upstream, {"reply": reply, "chunk_delay_ms": args.chunk_delay_ms})
    target = StreamTarget("profiled", url, proc)
    connector = aiohttp.TCPConnector(limit=STREAMS)
    async with aiohttp.ClientSession(connector=connector) as http:
        await streams_round(http, target)  # warm-up
        target.cpu_s, target.chunks = 0.0, 0
        spy = await asyncio.create_subprocess_exec(
            *spy_command(proc.pid, args), stdout=subprocess.DEVNULL
        )
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            await streams_round(http, target)
        await spy.wait()
    await harness.set_knobs(upstream, {"reply": None, "chunk_delay_ms": 0.0})
    print(f"{target.chunks:,} chunks in rounds of {STREAMS} streams")
    summarise(args.raw, target.cpu_s / target.chunks * 1e6, args.top, unit="chunk")


async def run(args: argparse.Namespace) -> None:
    os.environ["BENCH_KEY"] = "sk-bench"
    fake, upstream = harness.start_fake()
    os.sched_setaffinity(0, {harness.LOAD_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="aegis-profile-"))
    proc = None
    try:
        proc, port, _ = await harness.start_timed(
            (lambda p, attempt: harness.minimal_command(upstream, p))
            if args.minimal
            else (
                lambda p, attempt: harness.sidecar_command(
                    harness.sidecar_config(upstream, workdir / attempt, p)
                )
            )
        )
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        if args.streams:
            await profile_streams(proc, url, upstream, args)
        else:
            await profile_requests(proc, url, args)
    finally:
        harness.stop(proc)
        harness.stop(fake)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="how long to sample")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=30, help="rows per table")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        help="requests in flight (1: the latency figures' load)",
    )
    parser.add_argument(
        "--minimal",
        action="store_true",
        help="profile the minimal pass-through (the baseline) instead of the sidecar",
    )
    parser.add_argument(
        "--streams",
        action="store_true",
        help="drive many streams at once and share the CPU out per relayed chunk",
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=1.0,
        help="with --streams: the upstream's pause between chunks (as in make bench)",
    )
    parser.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every thread that is not idle, not only the GIL's holder",
    )
    parser.add_argument(
        "--raw",
        type=Path,
        default=Path(tempfile.gettempdir()) / "aegis-sidecar-profile.txt",
        help="where py-spy's collapsed stacks go (flamegraph.pl input)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
