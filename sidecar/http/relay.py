"""Relaying a streamed answer (SSE) from a provider to the client, in the client's API.

Fallback is only possible before the first byte reaches the client: the adapter's
``start()`` connects and checks the status, so errors there move on to the next
candidate. Once the response is committed, a cut upstream stream ends with the
API's own error event (chat: an OpenAI error ``data:`` event; Responses:
``response.failed``; Messages: ``event: error``) so SDKs raise or report instead
of returning a silently short answer. A client that goes away cancels the
handler; the upstream call is closed and the reservation is settled
conservatively (the provider may bill tokens it generated before noticing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from ..adapters import ErrorKind, UpstreamError
from ..exchange import Exchange, open_stream
from ..frontends import Translated, stream_translator
from .error_bodies import stream_error

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


_DONE = b"data: [DONE]"
_TAIL = 64  # bytes at a chunk's end that hold its [DONE], if any, with its line ends


class ClientStalled(ConnectionError):
    """The client did not take a write within ``clientTimeoutSeconds``."""


def _never(size: int) -> bool:
    return False


def write_cannot_wait(transport: asyncio.BaseTransport | None) -> Callable[[int], bool]:
    """Whether a write of ``size`` bytes returns without waiting for the client.

    aiohttp's write waits only while the transport has paused the protocol, which it
    does once its buffer passes the high-water mark and undoes once the buffer is
    back at the low-water mark. With the buffer at or below the low mark (the client
    has read everything so far) and ``size`` within the gap, the write cannot wait:
    it needs no timer (arming one cost ~3 us a chunk, a sixth of a relayed chunk's
    CPU). Otherwise, and for a transport that does not tell its buffer, the write is
    timed."""
    # Duck-typed: uvloop's transports are not asyncio.WriteTransport instances.
    limits = getattr(transport, "get_write_buffer_limits", None)
    size_of = getattr(transport, "get_write_buffer_size", None)
    if limits is None or size_of is None:
        return _never
    try:
        low, high = limits()
    except NotImplementedError:
        return _never
    buffered: Callable[[], int] = size_of
    gap: int = high - low

    def cannot_stall(size: int) -> bool:
        return size <= gap and buffered() <= low

    return cannot_stall


async def relay(
    request: web.Request,
    exchange: Exchange,
    translated: Translated,
    *,
    client_timeout: float,
    deadline: float,
) -> web.StreamResponse:
    """Relay the stream; ``deadline`` (``loop.time()``) ends it with an error event,
    a client that takes no write for ``client_timeout`` seconds is dropped."""
    stream = await open_stream(exchange)
    handle = stream.handle
    translator = stream_translator(translated, exchange.request_id, handle.model)
    response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **stream.headers()})

    cannot_stall = write_cannot_wait(request.transport)
    write = response.write

    async def send_timed(data: bytes) -> None:
        try:
            async with asyncio.timeout(client_timeout):
                await write(data)
        except TimeoutError:
            raise ClientStalled("the client stopped reading") from None

    async def send(data: bytes) -> None:
        if cannot_stall(len(data)):
            await write(data)
        else:
            await send_timed(data)

    # The client has the whole answer once its terminal event went out: chat's
    # ``[DONE]`` is relayed as it arrives, before the upstream connection ends, and an
    # SDK hangs up right after reading it; that is not a cancelled request.
    answered = False
    try:
        await response.prepare(request)
        opening = translator.start()
        if opening:
            await send(opening)
        try:
            async with asyncio.timeout_at(deadline):
                async for events in handle:
                    stream.forwarded(events)
                    out = translator.feed(events)
                    if out:
                        # send(), inlined: a coroutine less per chunk (~0.5 us).
                        if cannot_stall(len(out)):
                            await write(out)
                        else:
                            await send_timed(out)
                        # Only the end is looked at: rstrip() of the whole chunk copies it.
                        answered = out[-_TAIL:].rstrip().endswith(_DONE)
            usage = handle.usage
            closing = translator.finish(
                (usage.prompt_tokens, usage.completion_tokens) if usage is not None else None
            )
            if closing:
                await send(closing)
            answered = True
        except (UpstreamError, TimeoutError) as error:
            if isinstance(error, TimeoutError):
                error = UpstreamError(
                    ErrorKind.TIMEOUT,
                    "the request's deadline passed",
                    provider=stream.candidate.provider.name,
                    model=handle.model,
                )
            failure = stream.broke(error)
            await send(translator.failed(stream_error(failure, translated.api)))
    except ClientStalled:
        stream.cancelled()
        await stream.finish()
        if request.transport is not None:
            request.transport.abort()  # drop what it never read
        return response
    except (asyncio.CancelledError, ConnectionError):
        if not answered:
            stream.cancelled()
        raise
    finally:
        charged = await stream.finish()  # once: a no-op after the stalled client's
    try:
        # An SSE comment: ignored by clients, visible to people and tests with curl.
        await send(f": aegis-cost-usd {charged:f}\n\n".encode())
        await response.write_eof()
    except ClientStalled:
        if request.transport is not None:
            request.transport.abort()
    return response
