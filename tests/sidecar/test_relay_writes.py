"""When a relayed chunk's write needs no timer: only while the client has taken
everything sent so far, on the real transports (asyncio's and uvloop's)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop

from aegis.sidecar.http.relay import write_cannot_wait


async def check_transport() -> None:
    server_side: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _r, w: server_side.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        low, high = writer.transport.get_write_buffer_limits()
        cannot_wait = write_cannot_wait(writer.transport)
        assert cannot_wait(1000)  # nothing buffered: a chunk goes out at once
        assert not cannot_wait(high - low + 1)  # may pass the high-water mark: timed
        chunk = b"x" * 65536
        while writer.transport.get_write_buffer_size() <= low:  # the peer never reads
            writer.write(chunk)
            await asyncio.sleep(0)  # let the loop try to send it
        assert not cannot_wait(1)  # a client behind on reading: every write is timed
    finally:
        writer.transport.abort()
        server.close()
        for w in server_side:
            w.transport.abort()
        await server.wait_closed()


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_writes_are_untimed_only_while_the_client_keeps_up(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(check_transport())


def test_a_transport_that_does_not_tell_its_buffer_is_always_timed() -> None:
    assert not write_cannot_wait(None)(1)
