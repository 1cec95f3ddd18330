"""The sidecar as its own process, started as ``aegis sidecar`` starts it: for tests
that need what only a process has (its pid and memory, its logs, its exit)."""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.procs import ServerProcess, start_on_free_ports

AEGIS = [sys.executable, "-m", "aegis.operator.cli"]


def sidecar_ready(ports: list[int]) -> bool:
    """Whether the sidecar on ``ports[0]`` answers its readiness probe."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def start_sidecar(
    document: dict[str, Any], workdir: Path, env: dict[str, str]
) -> tuple[ServerProcess, int]:
    """``aegis sidecar`` with ``document`` (its listen port set here) as
    ``workdir/config.yaml``, logging to ``workdir/sidecar.log``; returns it once ready,
    with its port. On a port taken since it was chosen, it exits and starts again on
    another."""
    config = workdir / "config.yaml"

    def launch(ports: list[int]) -> ServerProcess:
        document["listen"] = {**document.get("listen", {}), "port": ports[0], "metricsPort": 0}
        config.write_text(yaml.safe_dump(document))
        process = ServerProcess(
            "sidecar",
            [*AEGIS, "sidecar", "--config", str(config)],
            workdir / "sidecar.log",
            env=env,
        )
        process.start()
        return process

    proc, (port,) = await asyncio.to_thread(
        start_on_free_ports, launch, 1, sidecar_ready, timeout=30, what="the sidecar's /readyz"
    )
    return proc, port
