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

from aiohttp import web

from ..adapters import UpstreamError
from ..exchange import Exchange, open_stream
from ..frontends import Translated, stream_translator
from .error_bodies import stream_error

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


async def relay(
    request: web.Request, exchange: Exchange, translated: Translated
) -> web.StreamResponse:
    stream = await open_stream(exchange)
    handle = stream.handle
    translator = stream_translator(translated, exchange.request_id, handle.model)
    response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **stream.headers()})
    try:
        await response.prepare(request)
        opening = translator.start()
        if opening:
            await response.write(opening)
        try:
            async for events in handle:
                stream.forwarded(events)
                out = translator.feed(events)
                if out:
                    await response.write(out)
            usage = handle.usage
            closing = translator.finish(
                (usage.prompt_tokens, usage.completion_tokens) if usage is not None else None
            )
            if closing:
                await response.write(closing)
        except UpstreamError as error:
            failure = stream.broke(error)
            await response.write(translator.failed(stream_error(failure, translated.api)))
    except (asyncio.CancelledError, ConnectionError):
        stream.cancelled()
        raise
    finally:
        charged = await stream.finish()
    # An SSE comment: ignored by clients, visible to people and tests with curl.
    await response.write(f": aegis-cost-usd {charged:f}\n\n".encode())
    await response.write_eof()
    return response
