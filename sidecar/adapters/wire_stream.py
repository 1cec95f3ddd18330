"""A streamed chat completion on the OpenAI wire, and how its silences are bounded.

A stream may stay silent for at most the provider's ``timeoutSeconds`` (less near
the request's deadline): before its headers, before its first event, between two
events. aiohttp's ``sock_read`` timeout does that by re-arming a timer on every
network read, ~1.4 us with uvloop: a tenth of a relayed chunk's CPU. Here the wait
for the headers gets one timer, and the body an :class:`IdleWatch` that looks every
quarter of the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp
from yarl import URL

from .base import (
    MODEL_FALLBACK_STATUSES,
    ErrorKind,
    StreamEnd,
    UpstreamCall,
    UpstreamError,
    Usage,
)
from .wire import EventFilter, SseFilter, map_exception, status_error


class StreamSource(Protocol):
    """What a :class:`WireStream` needs of its adapter
    (:class:`~.openai_wire.OpenAIWireAdapter` and its subclasses)."""

    provider: str
    max_event_bytes: int

    @property
    def session(self) -> aiohttp.ClientSession: ...

    @property
    def chat_url(self) -> URL: ...

    def headers_for(self, call: UpstreamCall, *, stream: bool) -> Mapping[str, str]: ...

    def encode_chat(self, call: UpstreamCall, model: str, *, stream: bool) -> bytes: ...

    def timeout_for(self, call: UpstreamCall, *, stream: bool) -> aiohttp.ClientTimeout: ...

    def read_limit(self, call: UpstreamCall) -> float: ...


class IdleWatch:
    """Ends a response body with :class:`aiohttp.ServerTimeoutError` once it has been
    waited on for ``limit`` seconds with nothing arriving.

    The reader marks each read ``fresh`` and says whether it is ``waiting`` (a
    consumer that holds a chunk, such as a relay blocked on a slow client, is not an
    upstream's silence; aiohttp's ``sock_read`` likewise stops while reading is
    paused). A timer looks every quarter of the limit; four looks in a row that find
    the reader waiting with nothing fresh end the body: a silence of at least
    ``limit``, noticed within 1.25 x ``limit``."""

    LOOKS = 4
    __slots__ = ("_body", "_handle", "_interval", "_limit", "_loop", "_quiet", "fresh", "waiting")

    def __init__(self, body: aiohttp.StreamReader, limit: float) -> None:
        self._body = body
        self._limit = limit
        self._interval = limit / self.LOOKS
        self._loop = asyncio.get_running_loop()
        self._quiet = 0
        self.fresh = False
        self.waiting = True
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._interval, self._look)

    def _look(self) -> None:
        if self.fresh or not self.waiting:
            self.fresh, self._quiet = False, 0
        else:
            self._quiet += 1
            if self._quiet >= self.LOOKS:
                self._handle = None
                self._body.set_exception(
                    aiohttp.ServerTimeoutError(f"no data from the provider for {self._limit:g} s")
                )
                return
        self._handle = self._loop.call_later(self._interval, self._look)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class WireStream:
    """A streamed chat completion through an OpenAI-wire adapter (see
    ``StreamHandle``); ``events`` translates another wire's SSE (Anthropic's)."""

    def __init__(
        self, adapter: StreamSource, call: UpstreamCall, events: EventFilter | None = None
    ) -> None:
        self._adapter = adapter
        self._call = call
        self._resp: aiohttp.ClientResponse | None = None
        self._watch: IdleWatch | None = None
        self._model = call.models[0]
        self._filter = events or SseFilter(
            keep_usage_chunk=call.client_wants_usage, max_event_bytes=adapter.max_event_bytes
        )
        self._started = 0.0
        self._ttfb: float | None = None
        self._closed = False
        self._on_end: StreamEnd | None = None

    @property
    def model(self) -> str:
        return self._model

    @property
    def usage(self) -> Usage | None:
        return self._filter.usage

    @property
    def ttfb_s(self) -> float | None:
        return self._ttfb

    async def start(self) -> None:
        adapter, call = self._adapter, self._call
        session = adapter.session
        headers = adapter.headers_for(call, stream=True)
        limit = adapter.read_limit(call)
        last = len(call.models) - 1
        for i, model in enumerate(call.models):
            self._model = model
            data = adapter.encode_chat(call, model, stream=True)
            self._started = time.monotonic()
            try:
                async with asyncio.timeout(limit):
                    resp = await session.post(
                        adapter.chat_url,
                        data=data,
                        headers=headers,
                        timeout=adapter.timeout_for(call, stream=True),
                    )
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise map_exception(exc, provider=adapter.provider, model=model) from None
            if 200 <= resp.status < 300:
                self._resp = resp
                self._watch = IdleWatch(resp.content, limit)
                return
            try:
                async with asyncio.timeout(limit):
                    raw = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                resp.release()
            error = status_error(
                resp.status, resp.headers, raw, provider=adapter.provider, model=model
            )
            if resp.status in MODEL_FALLBACK_STATUSES and i < last:
                continue
            raise error

    def watch_end(self, callback: StreamEnd) -> None:
        self._on_end = callback

    def _ended(self, error: UpstreamError | None) -> None:
        callback, self._on_end = self._on_end, None
        if callback is not None:
            callback(error)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        resp, watch = self._resp, self._watch
        if resp is None or watch is None:
            raise RuntimeError("WireStream.start() must succeed before iteration")
        push = self._filter.push
        # readany() itself rather than iter_any(), whose iterator is one more
        # awaitable per read; b"" is the end of the body, as there.
        read = resp.content.readany
        sent = False
        try:
            while chunk := await read():
                watch.fresh = True
                if self._ttfb is None:
                    self._ttfb = time.monotonic() - self._started
                out = push(chunk)
                if out:
                    sent = True
                    watch.waiting = False
                    yield out
                    watch.waiting = True
            out = self._filter.flush()
            if out:
                yield out
        except (TimeoutError, aiohttp.ClientError) as exc:
            mapped = map_exception(
                exc, provider=self._adapter.provider, model=self._model, partial=True
            )
            self._ended(mapped)
            raise mapped from None
        except UpstreamError as error:  # from the event filter: say whose stream it was
            error.provider = error.provider or self._adapter.provider
            error.model = error.model or self._model
            error.partial = sent
            self._ended(error)
            raise
        finally:
            await self.aclose()
        if not self._filter.done:
            unfinished = UpstreamError(
                ErrorKind.PROTOCOL,
                "stream ended before [DONE]",
                provider=self._adapter.provider,
                model=self._model,
                partial=sent,
                retriable=False,
            )
            self._ended(unfinished)
            raise unfinished
        self._ended(None)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.stop()
        resp = self._resp
        if resp is None:
            return
        if self._filter.done:
            resp.release()
        else:
            resp.close()
