"""An upstream's endless stream event costs the sidecar about its bound, no more.

An upstream decides how long an SSE event is. The sidecar keeps an unfinished one
until a later read completes it, up to ``listen.limits.maxUpstreamEventBytes``, and
then fails the stream over. What that holding costs is measured twice: in Python's
own allocations for each stream filter (tracemalloc: exact), and in the resident
memory of a real sidecar process whose streams all meet a 10 MB event (what a
misbehaving provider must not push past the pod's memory limit).
"""

from __future__ import annotations

import asyncio
import os
import signal
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aegis.sidecar.adapters import ErrorKind, UpstreamError
from aegis.sidecar.adapters.anthropic_wire import MessagesSse
from aegis.sidecar.adapters.wire import MAX_EVENT_BYTES, EventFilter, SseFilter
from tests.controlplane.procs import memory_kib, reset_peak_rss
from tests.sidecar.conftest import Fakes, base_document
from tests.sidecar.shared_helpers import poll_until
from tests.sidecar.sidecar_process import start_sidecar

READ = 64 * 1024  # one network read
BOUND = 1024 * 1024
MiB = 1024 * 1024

FILTERS: dict[str, Callable[[], EventFilter]] = {
    "openai": lambda: SseFilter(keep_usage_chunk=False, max_event_bytes=BOUND),
    "anthropic": lambda: MessagesSse(
        keep_usage_chunk=False, model="claude", provider="anthropic", max_event_bytes=BOUND
    ),
}

# One text delta in each wire, with CRLF line ends.
DELTAS = {
    "openai": b'data: {"choices":[{"index":0,"delta":{"content":"TEXT"}}]}\r\n\r\n',
    "anthropic": b"event: content_block_delta\r\n"
    b'data: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"TEXT"}}\r\n\r\n',
}


@pytest.mark.parametrize("wire", FILTERS)
def test_an_event_past_the_bound_holds_the_bound_and_leaves_nothing(wire: str) -> None:
    stream = FILTERS[wire]()
    stream.push(b'data: {"pad":"')  # an event begins, and does not end
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with pytest.raises(UpstreamError, match=f"longer than {BOUND} bytes") as raised:
            for _ in range(BOUND // READ + 2):
                assert stream.push(b"x" * READ) == b""  # the event goes on
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.kind is ErrorKind.PROTOCOL
    # The reads kept until the bound, once: no copy of the whole event per read.
    assert peak - before <= BOUND + 4 * READ
    # The refused event is let go, though the error (and its traceback) is still held.
    assert held - before <= 2 * READ


@pytest.mark.parametrize("wire", FILTERS)
def test_an_event_split_anywhere_comes_out_whole(wire: str) -> None:
    """The reads of a long event are joined once, whatever their boundaries: the blank
    line that ends it may fall inside a read or between two (CRLF ones too)."""
    text = "y" * 300
    event = DELTAS[wire].replace(b"TEXT", text.encode())
    expected = FILTERS[wire]().push(event)
    assert text.encode() in expected  # a chunk the client gets
    for cut in range(len(event) - 6, len(event)):
        for second in range(cut + 1, len(event)):
            stream = FILTERS[wire]()
            parts = (event[:100], event[100:cut], event[cut:second], event[second:])
            assert b"".join(stream.push(part) for part in parts) == expected, (cut, second)


async def test_streams_meeting_huge_events_cost_the_process_about_their_bound(
    fakes: Fakes, tmp_path: Path
) -> None:
    streams = 8
    document: dict[str, Any] = base_document(fakes, tmp_path / "ledger.db")
    for fake in (fakes.openai, fakes.dashscope, fakes.ollama):
        fake.set_knobs(huge_event_bytes=10_000_000)
    proc, port = await start_sidecar(document, tmp_path, env=dict(os.environ))
    assert proc.pid is not None
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        async with aiohttp.ClientSession() as http:

            async def stream() -> int:
                async with http.post(url, json=body) as response:
                    await response.read()
                    return response.status

            assert await stream() == 502  # warm: one of each, before the peak is reset
            reset_peak_rss(proc.pid)
            start = memory_kib(proc.pid)["VmRSS"] // 1024
            statuses = await asyncio.gather(*(stream() for _ in range(streams)))
            peak = memory_kib(proc.pid)["VmHWM"] // 1024
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        await poll_until(lambda: not proc.running, within=30)
        proc.stop()
    # Every provider's stream failed over at its first event, then the 502.
    assert statuses == [502] * streams
    bound_mib = MAX_EVENT_BYTES / MiB
    assert peak - start <= streams * bound_mib * 1.5 + 16, (start, peak)
