"""Slow clients: one that reads its answer a byte at a time (or not at all) holds
neither a handler nor memory without bound; it is dropped after
``clientTimeoutSeconds`` and its request recorded once."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from aegis.sidecar.http.server import RunningSidecar
from aegis.sidecar.ledger.report import iter_entries
from tests.sidecar.conftest import Fakes, SidecarFactory
from tests.sidecar.shared_helpers import poll_until

# 40 "words" of 500 kB: an answer far larger than the socket buffers between us.
BIG_REPLY = " ".join(["x" * 500_000] * 40)


def short_client_timeout(doc: dict[str, Any]) -> None:
    doc["listen"] = {"limits": {"clientTimeoutSeconds": 0.5}}


def cancelled(running: RunningSidecar) -> float:
    total = 0.0
    for metric in running.runtime.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "aegis_requests_total" and sample.labels["outcome"] == "cancelled":
                total += sample.value
    return total


def answered(running: RunningSidecar) -> float:
    value = running.runtime.metrics.registry.get_sample_value(
        "aegis_requests_total",
        {"provider": "dashscope", "model": "qwen-plus", "outcome": "ok", "arm": "stable"},
    )
    return value or 0.0


def inflight(running: RunningSidecar) -> float:
    return running.runtime.metrics.registry.get_sample_value("aegis_inflight_requests") or 0.0


class SlowReader:
    """A client that sends ``body`` and then reads its answer one byte every 50 ms."""

    def __init__(self, port: int, body: dict[str, Any]) -> None:
        self.port = port
        self.body = body
        self.slow = True
        self.received = 0
        self.dropped = False  # the sidecar closed the connection
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SlowReader:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        reader, self.writer = await asyncio.open_connection(sock=sock, limit=1)
        data = json.dumps(self.body).encode()
        self.writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nX-Aegis-Batch-Size: 20\r\n"
            b"Content-Length: %d\r\n\r\n" % len(data) + data
        )
        await self.writer.drain()
        self.task = asyncio.create_task(self._read(reader))
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(1 if self.slow else 65536):
                self.received += len(data)
                if self.slow:
                    await asyncio.sleep(0.05)  # the client's own pace, not a wait for a result
        except ConnectionResetError:
            pass
        self.dropped = True

    def hurry(self) -> None:
        """Read the rest at full speed (to see where the answer ends)."""
        self.slow = False

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        self.writer.close()


async def test_a_stream_to_a_client_that_does_not_read_is_dropped(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    fakes.dashscope.set_knobs(reply=BIG_REPLY)
    body = {
        "model": "auto",
        "stream": True,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with make_sidecar(short_client_timeout) as sc, SlowReader(sc.port, body) as client:
        await poll_until(lambda: cancelled(sc) == 1, within=30)
        client.hurry()
        await poll_until(lambda: client.dropped, within=30)
        assert client.received < len(BIG_REPLY) // 2  # cut, not delivered
        assert sc.runtime.budgets.outstanding == 0
        await sc.runtime.ledger.flush()
        rows = [row async for row in iter_entries(sc.runtime.ledger_url)]
    assert [(r["status"], r["http_status"]) for r in rows] == [("cancelled", 499)]
    assert float(rows[0]["cost_usd"]) > 0  # what the provider may have billed


async def test_a_large_answer_to_a_client_that_does_not_read_is_dropped(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    fakes.dashscope.set_knobs(reply=BIG_REPLY)
    body = {"model": "auto", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    async with make_sidecar(short_client_timeout) as sc:
        async with SlowReader(sc.port, body) as client:
            # Answered (the row is written before the answer is sent), then stuck
            # writing to the client, then dropped: its handler has returned.
            await poll_until(lambda: answered(sc) == 1, within=30)
            await poll_until(lambda: inflight(sc) == 0, within=30)
            client.hurry()
            await poll_until(lambda: client.dropped, within=30)
            assert client.received < len(BIG_REPLY) // 2  # cut, not delivered
        await sc.runtime.ledger.flush()
        rows = [row async for row in iter_entries(sc.runtime.ledger_url)]
    # The answer was produced and paid for: recorded as such, once.
    assert [(r["status"], r["http_status"]) for r in rows] == [("ok", 200)]
