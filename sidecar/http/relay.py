"""Relaying a streamed chat completion (SSE) from a provider to the client.

Fallback is only possible before the first byte reaches the client: the adapter's
``start()`` connects and checks the status, so errors there move on to the next
candidate. Once the response is committed, a cut upstream stream ends with an
OpenAI-style error event so SDKs raise instead of returning a silently short
answer. A client that goes away cancels the handler; the upstream call is closed
and the reservation is settled conservatively (the provider may bill tokens it
generated before noticing).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..adapters import UpstreamError
from ..exchange import Exchange, open_stream
from .openai_errors import error_event

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


async def relay(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    stream = await open_stream(exchange)
    response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **stream.headers()})
    try:
        await response.prepare(request)
        try:
            async for events in stream.handle:
                stream.forwarded(events)
                await response.write(events)
        except UpstreamError as error:
            await response.write(error_event(stream.broke(error)))
    except (asyncio.CancelledError, ConnectionError):
        stream.cancelled()
        raise
    finally:
        charged = await stream.finish()
    # An SSE comment: ignored by clients, visible to people and tests with curl.
    await response.write(f": aegis-cost-usd {charged:f}\n\n".encode())
    await response.write_eof()
    return response
