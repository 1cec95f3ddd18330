"""The contract between the request executor and the provider adapters.

An adapter turns one OpenAI-shaped request (already parsed and routed by the
sidecar) into a call to one provider and hands back the provider's answer as
bytes the sidecar can forward unchanged. Everything the executor needs to settle
a budget and write a ledger row (the model that answered, the token usage, the
time to first byte) travels beside those bytes, so nobody has to parse the body
twice.

Failures are one exception type, :class:`UpstreamError`, whose ``kind`` and
``retriable`` fields drive retries, the circuit breaker and the fallback to the
next candidate. Its message is sanitised: bounded, single line, never the request
body, never headers (which carry keys).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from ..values import valueclass

__all__ = [
    "Adapter",
    "ErrorKind",
    "StreamHandle",
    "UpstreamCall",
    "UpstreamError",
    "UpstreamResult",
    "Usage",
    "parse_retry_after",
    "sanitize_message",
]

MAX_MESSAGE_CHARS = 300
MODEL_FALLBACK_STATUSES = frozenset({403, 404})
"""Statuses after which the next model of ``UpstreamCall.models`` is tried on the
same provider (DashScope answers 403 for a VLM the account may not use)."""
"""Upstream error messages are cut to this length before they reach logs or clients."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_BEARER = re.compile(r"(?i)(bearer\s+|sk-|api[_-]?key[=: ]+)[A-Za-z0-9._\-]{4,}")


MAX_TOKEN_COUNT = 2**31 - 1
"""A token count above this is not believed (nor would it fit the ledger's column)."""


@valueclass
class Usage:
    """Token counts as the provider reported them (the basis of the real cost)."""

    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def checked(cls, prompt: Any, completion: Any) -> Usage | None:
        """Usage from a provider's counts, or None (unknown: the charge then errs high)
        when either is not a whole number from 0 to :data:`MAX_TOKEN_COUNT` (a string,
        a float, a bool, a negative number: a provider's answer is not trusted to be
        well formed)."""
        for value in (prompt, completion):
            if isinstance(value, bool) or not isinstance(value, int):
                return None
            if not 0 <= value <= MAX_TOKEN_COUNT:
                return None
        return cls(prompt, completion)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class UpstreamCall:
    """One call to one provider, prepared by the executor.

    ``body`` is the client's parsed JSON body. Adapters never mutate it: they copy
    the top level, set ``model`` (and ``stream_options``, a token cap, provider
    extras) on the copy and serialise that copy exactly once.
    """

    body: Mapping[str, Any]
    models: Sequence[str]
    """Models to try in order; the next one is tried when a model answers 403/404
    (DashScope's instruct → thinking VLM fallback). Must not be empty."""
    max_tokens: int | None = None
    """Completion cap sent upstream when the body sets none, so that the budget
    reservation (made with this cap) is a true upper bound."""
    vision: bool = False
    """The request carries image input (DashScope then gets ``vl_high_resolution_images``
    when the provider spec asks for it)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra headers to send upstream (never logged)."""
    deadline: float | None = None
    """Absolute ``time.monotonic()`` after which no new attempt or retry starts."""

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("UpstreamCall.models must name at least one model")

    @property
    def client_wants_usage(self) -> bool:
        """Whether the client itself asked for the usage chunk of a stream."""
        options = self.body.get("stream_options")
        return isinstance(options, Mapping) and options.get("include_usage") is True

    def remaining(self, now: float | None = None) -> float | None:
        """Seconds left before the deadline (None when there is none)."""
        if self.deadline is None:
            return None
        return self.deadline - (time.monotonic() if now is None else now)


@valueclass
class UpstreamResult:
    """A successful (2xx) non-streaming answer."""

    status: int
    body: bytes
    """The provider's JSON body, byte for byte (OpenAI wire) or serialised once (SDK)."""
    model: str
    """The model that answered (one of ``UpstreamCall.models``; used for pricing)."""
    usage: Usage | None
    """None when the provider sent no usage (the executor then estimates)."""
    content_type: str = "application/json"
    latency_s: float = 0.0


class ErrorKind(StrEnum):
    TIMEOUT = "timeout"
    """No answer (or no next chunk) within the provider's timeout."""
    CONNECT = "connect"
    """Connection refused, reset or closed before the response started."""
    STATUS = "status"
    """The provider answered with a non-2xx status."""
    PROTOCOL = "protocol"
    """An answer that broke the wire protocol, e.g. a stream cut before ``[DONE]``."""
    CIRCUIT_OPEN = "circuit_open"
    """The provider's circuit breaker refused the call without contacting it."""
    CONFIG = "config"
    """The provider cannot be called as configured (no key, SDK extra missing)."""


_RETRIABLE_STATUSES = frozenset({408, 409, 425, 429})


class UpstreamError(Exception):
    """A failed upstream call.

    ``retriable`` says whether trying the same provider again may help (429, 5xx,
    timeouts, connection failures); the executor falls back to the next candidate
    for those and for ``circuit_open``. ``client_fault`` marks a 400-class answer
    that is the client's own doing (bad parameters): it should be returned to the
    client rather than retried elsewhere.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        partial: bool = False,
        retriable: bool | None = None,
    ) -> None:
        self.kind = kind
        self.message = sanitize_message(message)
        self.status = status
        self.retry_after = retry_after
        self.code = sanitize_message(code, limit=64) if code else None
        self.provider = provider
        self.model = model
        self.partial = partial
        """Part of a stream had already been forwarded when the error happened."""
        if retriable is None:
            retriable = _default_retriable(kind, status)
        self.retriable = retriable
        super().__init__(self.__str__())

    @property
    def client_fault(self) -> bool:
        return self.kind is ErrorKind.STATUS and self.status in (400, 413, 422)

    def __str__(self) -> str:
        where = f"{self.provider or '?'}:{self.model or '?'}"
        status = f" {self.status}" if self.status is not None else ""
        return f"upstream {where} {self.kind.value}{status}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"UpstreamError(kind={self.kind.value!r}, status={self.status!r}, "
            f"retriable={self.retriable!r}, retry_after={self.retry_after!r}, "
            f"provider={self.provider!r}, model={self.model!r}, message={self.message!r})"
        )


def _default_retriable(kind: ErrorKind, status: int | None) -> bool:
    if kind in (ErrorKind.TIMEOUT, ErrorKind.CONNECT):
        return True
    if kind is ErrorKind.STATUS and status is not None:
        return status in _RETRIABLE_STATUSES or status >= 500
    return False


def sanitize_message(message: str | None, *, limit: int = MAX_MESSAGE_CHARS) -> str:
    """One bounded line without control characters or anything that looks like a key."""
    if not message:
        return ""
    text = _CONTROL.sub(" ", str(message)).strip()
    text = _BEARER.sub(lambda m: m.group(1) + "***", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after") or headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@runtime_checkable
class StreamHandle(Protocol):
    """A streaming call: ``start()`` then iterate SSE bytes, then read the results.

    ``start()`` connects and checks the status; every error before the first byte
    is raised there, so the executor may retry or fall back before it commits its
    own response to the client. Iteration yields complete SSE events
    (``data: {...}\\n\\n``) as they arrive, possibly several per item, and ends with
    ``data: [DONE]``. A stream cut short raises :class:`UpstreamError` (kind
    ``protocol`` or ``timeout``, ``partial=True``) after yielding what arrived.
    ``aclose()`` releases the connection (call it when the client goes away).
    """

    @property
    def model(self) -> str: ...

    @property
    def usage(self) -> Usage | None: ...

    @property
    def ttfb_s(self) -> float | None: ...

    async def start(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


StreamEnd = Callable[[UpstreamError | None], None]
"""Called once when a stream's iteration ends: with the error that cut it, or None."""


@runtime_checkable
class ReportsEnd(Protocol):
    """A :class:`StreamHandle` that says when its iteration ended, so a wrapper that
    only needs to know that (the circuit breaker's) can hand its iterator out as it is
    instead of iterating it in a frame of its own (a frame per relayed chunk)."""

    def watch_end(self, callback: StreamEnd) -> None: ...


@runtime_checkable
class Adapter(Protocol):
    """What the executor calls for one provider. Implementations are reused for
    every request to that provider and safe for concurrent use."""

    provider: str

    async def chat(self, call: UpstreamCall) -> UpstreamResult: ...

    def chat_stream(self, call: UpstreamCall) -> StreamHandle: ...

    async def embeddings(self, call: UpstreamCall) -> UpstreamResult: ...

    async def aclose(self) -> None: ...
