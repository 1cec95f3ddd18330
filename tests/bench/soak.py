"""Soak: mixed good and hostile traffic against one sidecar process, providers
failing at random, for a while; then the figures that say whether anything leaked
or went missing.

The sidecar runs as its own process (``aegis sidecar``), so its resident memory
and open file descriptors are its own; the fake providers and the load run here.
Traffic: good requests on every API (chat, streamed chat, embeddings, Responses,
Messages) and hostile ones (lone surrogates, deep nesting, wrong types, bodies
that are not JSON, oversized bodies, bad tag headers). Every couple of seconds
each provider takes on a random fault (5xx bursts, answers that are not JSON, a
200 with an error body, streams cut mid-event, usage as strings or negatives, no
usage, stalls, slow drips) or heals.

Printed at the end: requests by kind and status, 5xx caused by input (must be 0:
a hostile request answered with a 5xx, or any ``internal_error``), RSS at start
and end and at its peak (must stay under the memory limit the injector gives a
sidecar), open descriptors at start and end, and ledger rows against answered
requests (every answer carrying an ``X-Aegis-Request-Id`` has exactly one row; must
match). Exit status 1 when one of those fails.

    python tests/bench/soak.py [--seconds 600] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
from aegis.operator.injector.settings import DEFAULT_RESOURCES
from aegis.sidecar.fakes import FakeUpstream
from aegis.sidecar.ledger.report import iter_entries
from tests.controlplane.procs import memory_kib

PY = sys.executable
USER = [{"role": "user", "content": "Summarise the ticket about the delayed delivery"}]
GOOD: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "auto", "messages": USER, "max_tokens": 32}),
    "stream": (
        "/v1/chat/completions",
        {"model": "auto", "messages": USER, "max_tokens": 32, "stream": True},
    ),
    "embeddings": ("/v1/embeddings", {"model": "auto", "input": "delayed delivery"}),
    "responses": ("/v1/responses", {"model": "auto", "input": "hello", "max_output_tokens": 32}),
    "messages": ("/v1/messages", {"model": "auto", "max_tokens": 32, "messages": USER}),
}
HOSTILE: list[tuple[str, bytes, dict[str, str]]] = [
    (
        "/v1/chat/completions",
        b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"tool_choice":"\\ud800"}',
        {},
    ),
    (
        "/v1/chat/completions",
        b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"metadata":'
        + b"[" * 5000
        + b"]" * 5000
        + b"}",
        {},
    ),
    ("/v1/chat/completions", b'{"model":"auto","messages":"hi"}', {}),
    ("/v1/chat/completions", b"\xff\xfe not json", {}),
    ("/v1/embeddings", b'{"model":"auto","input":[1,"a",null]}', {}),
    ("/v1/responses", b'{"model":"auto","input":[{"role":"system","content":5}]}', {}),
    ("/v1/messages", b'{"model":"auto","max_tokens":"x","messages":[]}', {}),
    (
        "/v1/chat/completions",
        b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}',
        {"X-Aegis-Quality": "\u00ff", "X-Aegis-Batch-Size": "-1"},
    ),
    (
        "/v1/chat/completions",
        json.dumps({"model": "auto", "messages": USER, "pad": "x" * 300_000}).encode(),  # 413
        {},
    ),
]
# Breakers that open and close within the soak, so every fault is met again and again.
BREAKER = {"failureThreshold": 5, "openSeconds": 1}
FAULTS: list[dict[str, Any]] = [
    *([{}] * 12),  # healthy about half the time
    {"error_rate": 0.5, "error_status": 503},
    {"fail_next": 3, "fail_status": 429},
    {"invalid_json": True},
    {"error_body_200": True},
    {"cut_mid_event": 2},
    {"cut_after_chunks": 3},
    {"usage_override": {"prompt_tokens": "12"}},
    {"usage_override": {"completion_tokens": -50}},
    {"omit_usage": True},
    {"stall_after_chunks": 1, "stall_ms": 3000},
    {"latency_ms": 3000},
    {"drip_bytes_per_second": 400},
    {"huge_event_bytes": 10_000_000},  # over the 4 MiB default bound
]


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    input_5xx: list[str] = field(default_factory=list)
    request_ids: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    sent: int = 0


def process_figures(pid: int) -> tuple[int, int, int]:
    """(resident bytes, peak resident bytes so far, open descriptors) of ``pid``."""
    memory = memory_kib(pid)
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return memory["VmRSS"] * 1024, memory["VmHWM"] * 1024, fds


def memory_limit() -> int:
    """The memory limit the injector gives a sidecar by default, in bytes."""
    limit = str(DEFAULT_RESOURCES["limits"]["memory"])
    units = {"Mi": 2**20, "Gi": 2**30}
    if limit[-2:] not in units:
        raise ValueError(f"the injector's default memory limit is {limit}: not in Mi or Gi")
    return int(limit[:-2]) * units[limit[-2:]]


def config(fakes: dict[str, FakeUpstream], ledger: Path) -> dict[str, Any]:
    return {
        "identity": {"route": "soak", "namespace": "bench"},
        "providers": [
            {
                "name": "local",
                "type": "ollama",
                "baseURL": fakes["ollama"].base_url,
                "models": {"default": "gemma3:4b", "embedding": "nomic-embed-text:latest"},
                "timeoutSeconds": 2,
                "circuitBreaker": BREAKER,
            },
            {
                "name": "dashscope",
                "type": "dashscope",
                "baseURL": fakes["dashscope"].base_url,
                "apiKeyEnv": "DASHSCOPE_API_KEY",
                "models": {"default": "qwen-plus", "embedding": "text-embedding-v4"},
                "timeoutSeconds": 2,
                "circuitBreaker": BREAKER,
            },
            {
                "name": "openai",
                "type": "openai",
                "baseURL": fakes["openai"].base_url,
                "apiKeyEnv": "OPENAI_API_KEY",
                "models": {"default": "gpt-4o-mini", "embedding": "text-embedding-3-small"},
                "timeoutSeconds": 2,
                "circuitBreaker": BREAKER,
            },
        ],
        "rules": [
            {"name": "batch", "match": {"minBatchSize": 11}, "to": {"provider": "dashscope"}},
            {"name": "critical", "match": {"quality": ["critical"]}, "to": {"provider": "openai"}},
        ],
        "default": {"provider": "local"},
        "fallback": ["dashscope", "openai", "local"],
        "budgets": [{"name": "ds", "provider": "dashscope", "limitUSD": "1000"}],
        "ledger": {"url": f"sqlite+aiosqlite:///{ledger}"},
        "listen": {
            "maxBodyBytes": 256 * 1024,
            "limits": {"requestTimeoutSeconds": 8, "clientTimeoutSeconds": 10},
        },
    }


async def one(session: aiohttp.ClientSession, root: str, tally: Tally, rng: random.Random) -> None:
    hostile = rng.random() < 0.3
    if hostile:
        path, data, headers = rng.choice(HOSTILE)
        kind = "hostile"
        headers = {"Content-Type": "application/json", **headers}
    else:
        kind = rng.choice(list(GOOD))
        path, body = GOOD[kind]
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        tag = rng.random()
        if tag < 0.3:
            headers["X-Aegis-Batch-Size"] = "20"
        elif tag < 0.5:
            headers["X-Aegis-Quality"] = "critical"
    tally.sent += 1
    try:
        async with session.post(root + path, data=data, headers=headers) as response:
            raw = await response.read()
            status = response.status
            request_id = response.headers.get("X-Aegis-Request-Id")
            for reason in filter(None, response.headers.get("X-Aegis-Fallback", "").split(",")):
                tally.fallbacks[reason.split(":", 1)[1]] += 1
    except (aiohttp.ClientError, TimeoutError) as error:
        tally.errors[f"{kind} {type(error).__name__}"] += 1
        return
    broken = status == 200 and (b"upstream_stream_interrupted" in raw or b"event: error" in raw)
    tally.statuses[f"{kind} {status}{' (stream ended by an error event)' if broken else ''}"] += 1
    if request_id:
        tally.request_ids.add(request_id)
    if (hostile and status >= 500) or b'"internal_error"' in raw:
        tally.input_5xx.append(f"{status} {path} {data[:80]!r}: {raw[:200]!r}")


async def chaos(fakes: dict[str, FakeUpstream], seed: int, stop: asyncio.Event) -> None:
    rng = random.Random(seed)  # its own: the faults do not depend on the load's pace
    while not stop.is_set():
        for fake in fakes.values():
            fake.reset()
            fake.set_knobs(**rng.choice(FAULTS))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)


async def wait_ready(url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)  # start-up poll
    raise RuntimeError("the sidecar did not become ready")


async def run(seconds: float, concurrency: int, seed: int) -> int:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="aegis-soak-"))
    ledger = work / "ledger.db"
    async with (
        FakeUpstream.start("openai") as openai_fake,
        FakeUpstream.start("dashscope") as dashscope,
        FakeUpstream.start("ollama") as ollama,
    ):
        fakes = {"openai": openai_fake, "dashscope": dashscope, "ollama": ollama}
        path = work / "config.yaml"
        path.write_text(yaml.safe_dump(config(fakes, ledger)))
        port = 18787 + seed % 1000
        env = {
            "OPENAI_API_KEY": "sk-soak",
            "DASHSCOPE_API_KEY": "sk-soak",
            "AEGIS_SPOOL_DIR": str(work / "spool"),
            "PATH": "/usr/bin:/bin",
        }
        command = ["-m", "aegis.operator.cli", "sidecar", "--config", str(path)]
        proc = await asyncio.create_subprocess_exec(
            PY,
            *command,
            *("--port", str(port), "--metrics-port", "0"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(work / "sidecar.log").open("wb"),
        )
        try:
            root = f"http://127.0.0.1:{port}"
            await wait_ready(root + "/readyz")
            start_rss, _, start_fds = process_figures(proc.pid)
            tally = Tally()
            stop = asyncio.Event()
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as session:

                async def worker() -> None:
                    while not stop.is_set():
                        await one(session, root, tally, rng)

                chaos_task = asyncio.create_task(chaos(fakes, seed, stop))
                workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
                began = time.monotonic()
                await asyncio.sleep(seconds)  # the soak's length
                stop.set()
                await asyncio.gather(*workers, chaos_task)
                elapsed = time.monotonic() - began
            for fake in fakes.values():
                fake.reset()
            await asyncio.sleep(1.0)  # let pooled connections idle out of the figures
            end_rss, peak_rss, end_fds = process_figures(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
    rows = [row async for row in iter_entries(f"sqlite+aiosqlite:///{ledger}")]
    ids = Counter(row["request_id"] for row in rows)
    duplicates = sum(1 for n in ids.values() if n > 1)
    missing = tally.request_ids - set(ids)
    print(f"soak: {elapsed:.0f} s, concurrency {concurrency}, seed {seed}")
    print(f"requests sent {tally.sent}, answered {sum(tally.statuses.values())}")
    for key, count in sorted(tally.statuses.items()):
        print(f"  {key:<50}{count:>8}")
    for key, count in sorted(tally.errors.items()):
        print(f"  client error {key:<24}{count:>8}")
    print(f"fallbacks by reason: {dict(tally.fallbacks.most_common())}")
    print(f"5xx caused by input: {len(tally.input_5xx)}")
    for line in tally.input_5xx[:10]:
        print(f"  {line}")
    limit = memory_limit()
    print(
        f"RSS: {start_rss / 2**20:.1f} MiB at start, {end_rss / 2**20:.1f} MiB at end, "
        f"{peak_rss / 2**20:.1f} MiB at its peak (an injected sidecar's limit: "
        f"{limit / 2**20:.0f} MiB)"
    )
    print(f"open fds: {start_fds} at start, {end_fds} at end")
    print(
        f"ledger rows {len(rows)} vs answered requests with a request id "
        f"{len(tally.request_ids)}: missing {len(missing)}, duplicated {duplicates}, "
        f"extra {len(set(ids) - tally.request_ids)}"
    )
    failed = bool(tally.input_5xx) or bool(missing) or duplicates > 0 or peak_rss > limit
    print("soak: FAIL" if failed else "soak: ok")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.seconds, args.concurrency, args.seed)))


if __name__ == "__main__":
    main()
