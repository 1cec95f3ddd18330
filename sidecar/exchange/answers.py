"""The two shapes of an answer: a whole JSON body, or a stream relayed as it comes.

Both take the first candidate that answers (:func:`~.attempts.first_answer`),
settle its cost and write the one ledger row. For a stream the HTTP layer writes
the events; :class:`OpenStream` does the effects around them: time to first
token, a break after the first byte, and the charge when the stream ends (what
the usage says, or, when the stream broke without usage, what the provider may
have billed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from decimal import Decimal

from ..adapters import ErrorKind, StreamHandle, UpstreamError, UpstreamResult, Usage
from ..budgets import Reservation
from ..contract.money import ZERO
from ..errors import UpstreamStreamInterrupted
from ..ledger import Status
from ..request import Kind
from ..routing import Candidate
from .attempts import failure_reason, first_answer, upstream_call
from .charges import actual_cost, charges_of, partial_cost, period_of, settle
from .masks import RestoringStream, masking_for
from .record import Exchange


async def complete(exchange: Exchange, kind: Kind) -> tuple[bytes, dict[str, str], int]:
    """Non-streaming chat or embeddings: the first candidate's success, settled and
    recorded. Returns (body, headers, status) or raises an
    :class:`~aegis.sidecar.errors.AegisError`."""

    async def call(candidate: Candidate, reservation: Reservation | None) -> UpstreamResult:
        adapter = exchange.runtime.adapters.get(candidate.provider.name)
        request = upstream_call(exchange, candidate)
        try:
            if kind == "chat":
                return await adapter.chat(request)
            return await adapter.embeddings(request)
        except asyncio.CancelledError:
            # The client went away; the provider may still bill the whole answer.
            charged = settle(exchange, reservation, candidate.worst_case_usd)
            exchange.record(
                candidate=candidate,
                model=candidate.models[0],
                status=Status.CANCELLED,
                http_status=499,
                cost_usd=charged,
                period=period_of(exchange, reservation, candidate.provider.name),
                charges=charges_of(reservation),
            )
            raise

    candidate, reservation, result = await first_answer(exchange, call)
    payload = result.body
    masking = masking_for(exchange, candidate)
    if masking is not None:
        exchange.masked = True
        if kind == "chat":
            payload = masking.restore_json(payload)
    charged = settle(exchange, reservation, actual_cost(candidate, result.model, result.usage))
    exchange.record(
        candidate=candidate,
        model=result.model,
        status=Status.OK,
        http_status=200,
        usage=result.usage,
        cost_usd=charged,
        period=period_of(exchange, reservation, candidate.provider.name),
        charges=charges_of(reservation),
    )
    headers = exchange.headers(candidate, result.model)
    headers["X-Aegis-Cost-USD"] = f"{charged:f}"
    headers["Content-Type"] = result.content_type
    return payload, headers, result.status


@dataclass(slots=True)
class OpenStream:
    """A started upstream stream and what has happened to it so far."""

    exchange: Exchange
    candidate: Candidate
    handle: StreamHandle
    reservation: Reservation | None
    chunks: int = 0
    ttft_ms: int | None = None
    status: Status = Status.OK
    http_status: int = 200
    charged: Decimal | None = None  # set once finished (settled and recorded)

    def headers(self) -> dict[str, str]:
        return self.exchange.headers(self.candidate, self.handle.model)

    def forwarded(self, events: bytes) -> None:
        """``events`` went to the client: the first time, that is the time to first token."""
        if self.ttft_ms is None:
            self.ttft_ms = self.exchange.elapsed_ms()
            metrics = self.exchange.runtime.metrics
            metrics.ttft_histogram(self.candidate.provider.name).observe(self.ttft_ms / 1000)
        self.chunks += events.count(b"data: ")

    def broke(self, error: UpstreamError) -> UpstreamStreamInterrupted:
        """The upstream stream failed after the first byte: no fallback is possible
        any more; returns the error to end the client's stream with."""
        timed_out = error.kind is ErrorKind.TIMEOUT
        self.status, self.http_status = Status.ERROR, 504 if timed_out else 502
        self.exchange.failed(self.candidate, failure_reason(error))
        return UpstreamStreamInterrupted(f"upstream stream ended early: {error.message}")

    def cancelled(self) -> None:
        """The client went away (the handler is being cancelled)."""
        self.status, self.http_status = Status.CANCELLED, 499

    async def finish(self) -> Decimal:
        """Close the upstream stream, settle, record; returns the amount charged.
        Only the first call does so; later ones return the same amount."""
        if self.charged is not None:
            return self.charged
        self.charged = ZERO  # settling below does not suspend: no second entry meanwhile
        await self.handle.aclose()
        candidate, model, usage = self.candidate, self.handle.model, self.handle.usage
        if usage is None and self.status is not Status.OK:
            # Unknown usage on a broken stream: charge what may have been billed.
            charge = partial_cost(self.exchange, candidate, model, self.chunks)
        else:
            charge = actual_cost(candidate, model, usage)
        charged = settle(self.exchange, self.reservation, charge)
        self.exchange.record(
            candidate=candidate,
            model=model,
            status=self.status,
            http_status=self.http_status,
            usage=usage,
            cost_usd=charged,
            ttft_ms=self.ttft_ms,
            period=period_of(self.exchange, self.reservation, candidate.provider.name),
            charges=charges_of(self.reservation),
        )
        self.charged = charged
        return charged


class Prefetched:
    """A stream whose first events have arrived before ``start()`` returns: until
    then nothing has reached the client, so a stream that breaks, stalls or sends
    garbage before its first event still falls back to the next candidate."""

    def __init__(self, inner: StreamHandle, within: float | None) -> None:
        self._inner = inner
        self._within = within  # seconds left of the request's deadline
        self._events: AsyncIterator[bytes] | None = None
        self._first = b""

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage

    @property
    def ttfb_s(self) -> float | None:
        return self._inner.ttfb_s

    async def start(self) -> None:
        try:
            async with asyncio.timeout(self._within):
                await self._inner.start()
                self._events = self._inner.__aiter__()
                self._first = await anext(self._events, b"")
        except TimeoutError:  # the adapters' own timeouts arrive as UpstreamError
            raise UpstreamError(
                ErrorKind.TIMEOUT, "the request's deadline passed", model=self.model
            ) from None

    # An iterator of its own rather than an async generator over the inner one, and
    # ``__anext__`` hands out the inner iterator's awaitable instead of awaiting it
    # in a coroutine of its own: a frame more per relayed chunk cost ~0.3-0.5 us of
    # a chunk's ~25.
    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._events is None:
            raise RuntimeError("start() must succeed before iteration")
        return self

    def __anext__(self) -> Awaitable[bytes]:
        first = self._first
        if first:
            self._first = b""
            return _ready(first)
        assert self._events is not None  # __aiter__ checked
        return self._events.__anext__()

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _ready(value: bytes) -> bytes:
    return value


async def open_stream(exchange: Exchange) -> OpenStream:
    """Start the stream on the first candidate that answers (fallback is possible
    only until then), or raise the :class:`~aegis.sidecar.errors.AegisError` that
    says why none did."""

    async def start(candidate: Candidate, reservation: Reservation | None) -> StreamHandle:
        adapter = exchange.runtime.adapters.get(candidate.provider.name)
        call = upstream_call(exchange, candidate)
        # The provider's timeout bounds the wait for the first event, as for the first
        # byte: a stream dripping its first event slowly leaves time to fall back.
        within = min(candidate.provider.timeout_seconds, call.remaining() or 0.0)
        handle = Prefetched(adapter.chat_stream(call), within)
        try:
            await handle.start()
        except BaseException:
            await handle.aclose()
            raise
        return handle

    candidate, reservation, handle = await first_answer(exchange, start)
    masking = masking_for(exchange, candidate)
    if masking is not None:
        exchange.masked = True
        handle = RestoringStream(handle, masking)
    return OpenStream(exchange, candidate, handle, reservation)
