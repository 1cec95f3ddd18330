"""``aegis probe``: the exec probe of the injected sidecar."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from aegis.operator.injector.probe import probe
from tests.controlplane.procs import bound_socket, closed_port

AEGIS = str(Path(sys.executable).parent / "aegis")


async def test_probe_exit_codes() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def not_ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": False}, status=503)

    app = web.Application()
    app.router.add_get("/readyz", ok)
    app.router.add_get("/starting", not_ready)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = bound_socket()
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert await asyncio.to_thread(probe, f"{base}/readyz") == 0
        assert await asyncio.to_thread(probe, f"{base}/starting") == 1
        done = await asyncio.to_thread(
            subprocess.run, [AEGIS, "probe", f"{base}/readyz"], capture_output=True, check=False
        )
        assert done.returncode == 0
    finally:
        await runner.cleanup()
    with closed_port() as closed:
        assert probe(f"http://127.0.0.1:{closed}/readyz") == 1  # nothing listening
    assert probe("file:///etc/passwd") == 2
