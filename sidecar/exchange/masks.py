"""Masking around the upstream call: placeholders out to cloud providers, originals back.

When privacy masked what detection found (``RequestFacts.masking``), a cloud
candidate receives the body with every detected value replaced by its
placeholder, and its answer (a JSON body or a stream) comes back with the
originals restored before anything else reads it. Local providers receive the
body as the client sent it: local-only data may reach them anyway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from ..adapters import StreamHandle, Usage
from ..request import Masking
from ..routing import Candidate
from .record import Exchange


def masking_for(exchange: Exchange, candidate: Candidate) -> Masking | None:
    """The masking that applies to a call to ``candidate`` (None: send as is)."""
    masking = exchange.facts.masking
    if masking is None or candidate.provider.is_local:
        return None
    return masking


def body_for(exchange: Exchange, candidate: Candidate) -> Mapping[str, Any]:
    """The body ``candidate`` receives (masked once, reused by later cloud candidates)."""
    masking = masking_for(exchange, candidate)
    if masking is None:
        return exchange.body
    if exchange.masked_body is None:
        exchange.masked_body = masking.apply(exchange.body)
    return exchange.masked_body


class RestoringStream:
    """A :class:`~aegis.sidecar.adapters.StreamHandle` whose events have the
    placeholders of ``masking`` replaced by the originals."""

    def __init__(self, inner: StreamHandle, masking: Masking) -> None:
        self._inner = inner
        self._restorer = masking.stream()

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
        await self._inner.start()

    async def _events(self) -> AsyncIterator[bytes]:
        async for events in self._inner:
            restored = self._restorer.feed(events)
            if restored:
                yield restored
        rest = self._restorer.finish()
        if rest:
            yield rest

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def aclose(self) -> None:
        await self._inner.aclose()
