"""A fleet of real sidecar and fake-upstream processes, forked by the zygote."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.controlplane.procs import address_in_use, free_port

ROOT = Path(__file__).resolve().parents[2]


class ChildDied(RuntimeError):
    """A forked process exited before it was ready."""


class Fleet:
    """Start, kill and restart processes; everything left is stopped on close."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.env = env or {}
        self.pids: dict[str, int] = {}  # name -> pid of the live process
        self.ports: dict[str, int] = {}
        # Log byte ranges of lives that died because another process took their port.
        self._lost_lives: dict[str, list[tuple[int, int]]] = {}
        self._zygote: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()  # one command/answer exchange at a time

    async def __aenter__(self) -> Fleet:
        root = ROOT
        self._zygote = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.sidecar.zygote",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        await self._answer()  # {"ready": pid}
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop_all()
        finally:
            # The zygote's exit SIGTERMs any child not stopped above.
            if self._zygote is not None and self._zygote.stdin is not None:
                self._zygote.stdin.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await self._zygote.wait()
                if self._zygote.returncode is None:
                    self._zygote.kill()

    async def _answer(self) -> dict[str, Any]:
        assert self._zygote is not None and self._zygote.stdout is not None
        async with asyncio.timeout(30):
            line = await self._zygote.stdout.readline()
        if not line:
            raise RuntimeError("zygote exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def spawn(
        self,
        name: str,
        kind: str,
        *,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        attempts: int = 5,
    ) -> int:
        """Fork ``name`` (a sidecar or a fake) and wait until its port accepts. A restart
        reuses the port unless it is taken meanwhile; a child that dies because its port
        was taken is forked again on another (clients ask :meth:`url` each time)."""
        assert self._zygote is not None and self._zygote.stdin is not None
        port = port or self.ports.get(name) or self._new_port()
        log = self.workdir / f"{name}.log"
        for attempt in range(attempts):
            self.ports[name] = port
            command = {
                "kind": kind,
                "port": port,
                "config": str(config) if config else None,
                "env": {**self.env, **(env or {})},
                "log": str(log),
            }
            logged = log.stat().st_size if log.exists() else 0
            async with self._lock:
                self._zygote.stdin.write((json.dumps(command) + "\n").encode())
                await self._zygote.stdin.drain()
                pid = int((await self._answer())["pid"])
            self.pids[name] = pid
            try:
                await self.wait_ready(name, kind, since=logged)
            except ChildDied:
                taken = address_in_use(log.read_bytes()[logged:].decode(errors="replace"))
                if not taken or attempt == attempts - 1:
                    raise
                self._lost_lives.setdefault(name, []).append((logged, log.stat().st_size))
                port = self._new_port()  # lost the race for this port: another one
                continue
            return pid
        raise AssertionError("unreachable")

    def _new_port(self) -> int:
        """A free port no process of this fleet was given: two children spawned at once
        must not both be handed the port the kernel offered twice."""
        while (port := free_port()) in self.ports.values():
            pass
        return port

    async def wait_ready(
        self, name: str, kind: str, *, since: int = 0, within: float = 30.0
    ) -> None:
        """Until ``name`` answers on its port. Another process answering there (one
        that won the race for the port) is not ``name``: a sidecar is ready only once
        its own log (after byte ``since``) says it serves on that port."""
        port = self.ports[name]
        path = "/readyz" if kind == "sidecar" else "/v1/models"
        url = f"http://127.0.0.1:{port}{path}"
        own = f"ready on http://127.0.0.1:{port}/".encode()
        log = self.workdir / f"{name}.log"
        probe = aiohttp.ClientTimeout(total=2)  # a port held by someone else may not answer
        async with asyncio.timeout(within), aiohttp.ClientSession(timeout=probe) as session:
            while True:
                if not alive(self.pids[name]):
                    raise ChildDied(f"{name} died: {self.log(name)[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    headers = {"Authorization": "Bearer test"}
                    async with session.get(url, headers=headers) as response:
                        if response.status < 500 and (
                            kind != "sidecar" or own in log.read_bytes()[since:]
                        ):
                            return
                await asyncio.sleep(0.05)  # poll; the deadline is the timeout above

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def log(self, name: str) -> str:
        """Everything ``name``'s lives logged, except lives that only lost their port
        to another process (their bind traceback is not the sidecar's fault)."""
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        data = path.read_bytes()
        for start, end in reversed(self._lost_lives.get(name, [])):
            data = data[:start] + data[end:]
        return data.decode(errors="replace")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pids[name], sig)

    async def stop(self, name: str, *, within: float = 20.0) -> None:
        """SIGTERM (graceful: drain, return leases, flush) and wait for the exit."""
        self.kill(name, signal.SIGTERM)
        await wait_gone(self.pids[name], within=within)
        self.pids.pop(name, None)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self.pids)))


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, not reaped by an init that never waits,
    counts as gone)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


async def wait_gone(pid: int, *, within: float) -> None:
    async with asyncio.timeout(within):
        for _ in iter(lambda: alive(pid), False):
            await asyncio.sleep(0.05)  # poll; the deadline is the timeout above
