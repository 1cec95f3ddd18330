"""Proxy benchmark (``make bench``): the sidecar beside a minimal aiohttp proxy and the
upstream directly (and LiteLLM's proxy when a venv with it is given, Go's reverse
proxy with ``--go-floor``), four tables from one run:

1. overhead of one call (:mod:`tests.bench.overhead`): latency at c=1, CPU per
   request, requests/s at c=32 and c=128, stream TTFB, RSS idle and under load,
   start-up; the same request through the sidecar's Responses and Messages
   endpoints beside chat's;
2. streams (:mod:`tests.bench.streams`): 100 streams at once x 200 chunks, chunks/s
   relayed and the proxy's CPU per chunk;
3. the ledger (:mod:`tests.bench.ledger_path`): the sidecar with its ledger on
   PostgreSQL, on SQLite and in memory: rows/s written, request p99;
4. the features (:mod:`tests.bench.feature_costs`): the sidecar with privacy
   detection, the budget and the routing rules off one at a time and all at once,
   beside the minimal proxy: what each costs a request, and what the rest does.

Processes: a fake OpenAI upstream and this load generator share core 0, every proxy
runs on core 1 (:mod:`tests.bench.harness`). Start-up: each proxy is started once
untimed, then again timed until it is ready (the first start fills a bytecode cache,
as pip's compile at install time would; the timed sidecar start creates and migrates
a fresh SQLite ledger, as a new pod does). The targets of a table are measured in
interleaved rounds, so other work on the machine slows all of them alike; that other
load (CPU time no benchmark process used) is printed with each table: rerun when it
is high, and trust ratios from one run more than absolute figures. Targets are
checked at the end (exit 1 if one is missed, unless --no-check).

    python tests/bench/sidecar_overhead.py [--quick] [--tracing] [--litellm VENV] [--go-floor]

``--tracing`` adds a sidecar with OpenTelemetry traces on (exporting OTLP/HTTP to a
sink in this process) to the first table's rounds, printed beside the one with them
off. ``--litellm VENV`` (or ``AEGIS_BENCH_LITELLM``): see
:mod:`tests.bench.litellm_proxy`. ``--go-floor``: see :mod:`tests.bench.go_floor`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
from tests.bench import (
    feature_costs,
    go_floor,
    harness,
    ledger_path,
    litellm_proxy,
    overhead,
    streams,
)
from tests.bench.harness import OtherLoad, private_mb, rss_mb, start_timed, stop
from tests.bench.overhead import APIS, Target
from tests.controlplane.otelcol import Sink

Command = Callable[[int, str], list[str]]


async def start_proxies(
    upstream: str, workdir: Path, litellm: Path | None, go: Path | None, sink: Sink | None
) -> list[Target]:
    """The proxies, each started twice (the second start timed), ready and idle."""
    cases: list[tuple[str, Command, str, dict[str, str] | None]] = [
        ("minimal", lambda port, _: harness.minimal_command(upstream, port), "/readyz", None),
        # Each start gets its own ledger: the timed one creates and migrates it.
        (
            "sidecar",
            lambda port, attempt: harness.sidecar_command(
                harness.sidecar_config(upstream, workdir / attempt, port)
            ),
            "/readyz",
            None,
        ),
    ]
    if litellm is not None:
        cases.append(
            (
                "litellm",
                lambda port, _: litellm_proxy.command(
                    litellm, litellm_proxy.config(upstream, workdir / "litellm"), port
                ),
                litellm_proxy.READY_PATH,
                litellm_proxy.ENV,
            )
        )
    if go is not None:
        cases.append(
            ("go", lambda port, _: go_floor.command(go, upstream, port), go_floor.READY_PATH, None)
        )
    if sink is not None:  # OpenTelemetry on, exporting to a sink in this process
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_SERVICE_NAME": "bench"}
        cases.append(
            (
                "sidecar traced",
                lambda port, attempt: harness.sidecar_command(
                    harness.sidecar_config(upstream, workdir / f"traced-{attempt}", port)
                ),
                "/readyz",
                otel,
            )
        )
    targets: list[Target] = []
    try:
        for name, command, ready_path, env in cases:
            # LiteLLM prints a banner on stdout; errors still go to stderr.
            out = subprocess.DEVNULL if name == "litellm" else None
            proc, port, ready = await start_timed(command, ready_path, env, stdout=out)
            target = Target(name, f"http://127.0.0.1:{port}{APIS['chat'][0]}", proc)
            target.figures.ready_s = ready
            target.figures.rss_mb = rss_mb(proc.pid)  # idle: ready, nothing served
            target.figures.private_mb = private_mb(proc.pid)
            targets.append(target)
            if name == "sidecar":  # the translated APIs through the same sidecar process
                root = f"http://127.0.0.1:{port}"
                for api in ("responses", "messages"):
                    path, body = APIS[api]
                    targets.append(Target(f"sidecar {api}", root + path, proc, body))
    except BaseException:
        for t in targets:
            stop(t.proc)
        raise
    return targets


async def run(args: argparse.Namespace, litellm: Path | None, go: Path | None) -> int:
    n = 200 if args.quick else args.requests
    rounds = 2 if args.quick else args.rounds
    workdir = Path(tempfile.mkdtemp(prefix="aegis-bench-"))
    sink = Sink() if args.tracing else None
    fake, upstream = harness.start_fake()
    os.environ["BENCH_KEY"] = "sk-bench"
    os.sched_setaffinity(0, {harness.LOAD_CORE})
    checks: dict[str, bool] = {}
    targets: list[Target] = []
    try:
        targets = await start_proxies(upstream, workdir, litellm, go, sink)
        procs = {t.proc.pid for t in targets if t.proc is not None}
        direct = Target("direct", upstream + "/chat/completions")
        if "1" in args.tables:
            load = OtherLoad(lambda: [fake.pid, *procs])
            await overhead.measure([direct, *targets], load, n, rounds)
            results = {t.name: t.figures for t in [direct, *targets]}
            checks.update(overhead.report(results, load))
            if sink is not None:
                await asyncio.sleep(6)  # deliberate pacing: the exporter's 5 s batch delay
                print(f"\nspans exported by the traced sidecar: {len(sink.all()):,}")
        if "2" in args.tables:
            load = OtherLoad(lambda: [fake.pid, *procs])
            rows = {"direct", *(name for _, name in overhead.ROWS)}  # not the other APIs
            relays = [
                streams.StreamTarget(t.name, t.url, t.proc)
                for t in [direct, *targets]
                if t.name in rows
            ]
            delay = args.chunk_delay_ms
            await streams.measure(relays, load, upstream, 1 if args.quick else 3, delay)
            checks.update(streams.report(relays, load, delay))
        for t in targets:  # the third and fourth tables start sidecars of their own
            stop(t.proc)
        if "3" in args.tables:
            ledgers, load = await ledger_path.measure(upstream, fake.pid, n, rounds)
            ledger_path.report(ledgers, load)
        if "4" in args.tables:
            variants, load = await feature_costs.measure(
                upstream, fake.pid, workdir / "features", n, rounds
            )
            feature_costs.report(variants, load)
    finally:
        for t in targets:
            stop(t.proc)
        stop(fake)
        if sink is not None:
            sink.close()
    missed = [name for name, ok in checks.items() if not ok]
    print("\ntargets missed: " + ("; ".join(missed) if missed else "none"))
    return 1 if missed and not args.no_check else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="latency samples per target")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="200 samples, fewer rounds (smoke)")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even if targets missed")
    parser.add_argument("--tables", default="1234", help="which tables, e.g. 1 or 23 (all: 1234)")
    parser.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=1.0,
        help="the upstream's pause between stream chunks in the streams table",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also a sidecar with OpenTelemetry traces on, printed beside the one with them off",
    )
    parser.add_argument(
        "--litellm",
        metavar="VENV",
        help=f"a venv with litellm[proxy], for a LiteLLM row (or ${litellm_proxy.ENV_VAR})",
    )
    parser.add_argument(
        "--go-floor",
        action="store_true",
        help="also Go's reverse proxy (built with the local Go toolchain): a compiled floor",
    )
    args = parser.parse_args()
    go = go_floor.binary() if args.go_floor else None
    return asyncio.run(run(args, litellm_proxy.find_venv(args.litellm), go))


if __name__ == "__main__":
    sys.exit(main())
