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
from decimal import Decimal

from aiohttp import web

from ..adapters.base import StreamHandle, UpstreamError, Usage
from ..budgets.book import Reservation
from ..errors import UpstreamStreamInterrupted
from ..exchange.pipeline import (
    Exchange,
    _reason,
    actual_cost,
    first_answer,
    upstream_call,
)
from ..ledger.models import Status
from ..routing.router import Candidate
from .openai_errors import error_event

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


async def open_stream(exchange: Exchange) -> tuple[Candidate, StreamHandle, Reservation | None]:
    """Start the stream on the first candidate that answers, or raise the
    :class:`~aegis.sidecar.errors.AegisError` that says why none did."""

    async def start(candidate: Candidate, reservation: Reservation | None) -> StreamHandle:
        adapter = exchange.runtime.adapters.get(candidate.provider.name)
        handle = adapter.chat_stream(upstream_call(exchange, candidate))
        try:
            await handle.start()
        except BaseException:
            await handle.aclose()
            raise
        return handle

    candidate, reservation, handle = await first_answer(exchange, start)
    return candidate, handle, reservation


async def relay(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    candidate, handle, reservation = await open_stream(exchange)
    response = web.StreamResponse(
        status=200, headers={**SSE_HEADERS, **exchange.headers(candidate, handle.model)}
    )
    status, http_status = Status.OK, 200
    chunks = 0
    ttft_ms: int | None = None
    try:
        await response.prepare(request)
        try:
            async for events in handle:
                if ttft_ms is None:
                    ttft_ms = exchange.elapsed_ms()
                    exchange.runtime.metrics.ttft_histogram(candidate.provider.name).observe(
                        ttft_ms / 1000
                    )
                chunks += events.count(b"data: ")
                await response.write(events)
        except UpstreamError as error:
            status, http_status = Status.ERROR, 502
            exchange.failed(candidate, _reason(error))
            interrupted = UpstreamStreamInterrupted(f"upstream stream ended early: {error.message}")
            await response.write(error_event(interrupted))
    except (asyncio.CancelledError, ConnectionError):
        status, http_status = Status.CANCELLED, 499
        raise
    finally:
        await handle.aclose()
        usage = handle.usage
        if usage is None and status is not Status.OK:
            # Unknown usage on a broken stream: charge what may have been billed.
            charged_cost = _partial_cost(exchange, candidate, handle.model, chunks)
        else:
            charged_cost = actual_cost(candidate, handle.model, usage)
        charged = exchange.settle(reservation, charged_cost)
        exchange.record(
            candidate=candidate,
            model=handle.model,
            status=status,
            http_status=http_status,
            usage=usage,
            cost_usd=charged,
            ttft_ms=ttft_ms,
            period=exchange.period_of(reservation, candidate.provider.name),
        )
    # An SSE comment: ignored by clients, visible to people and tests with curl.
    await response.write(f": aegis-cost-usd {charged:f}\n\n".encode())
    await response.write_eof()
    return response


def _partial_cost(exchange: Exchange, candidate: Candidate, model: str, chunks: int) -> Decimal:
    """The worst case when nothing was forwarded, else prompt bound + one token per chunk,
    capped by the reservation (never below what could have been generated)."""
    if chunks == 0:
        return candidate.worst_case_usd
    estimate = Usage(exchange.facts.prompt_tokens_bound(model), chunks)
    return min(actual_cost(candidate, model, estimate), candidate.worst_case_usd)
