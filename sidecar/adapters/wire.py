"""Byte-level helpers shared by the adapters: usage extraction, SSE filtering,
error-body parsing and exception mapping.

Kept apart from the adapters so the hot path's few operations are easy to see
and to measure: a non-stream body is searched for its ``usage`` object from the
end (no full parse of a possibly large body), and a stream chunk is parsed only
when it carries a usage object.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

from .base import ErrorKind, UpstreamError, Usage, parse_retry_after
from .sse_events import EventBuffer

_DECODER = json.JSONDecoder()
_USAGE_KEY = b'"usage"'
# A ``"usage"`` key whose value is an object, in compact and in ``": "`` JSON: the
# fast path of :meth:`SseFilter.push` and :func:`_usage_object_at` look for the same.
_USAGE_COMPACT = b'"usage":{'
_USAGE_SPACED = b'"usage": {'
_MAX_ERROR_BODY = 64 * 1024
MAX_EVENT_BYTES = 4 * 1024 * 1024
"""Default bound on one SSE event of an upstream (``listen.limits.maxUpstreamEventBytes``)."""
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Default bound on a whole upstream answer (``listen.limits.maxUpstreamBodyBytes``)."""


def usage_from_mapping(value: Any) -> Usage | None:
    """``Usage`` from an OpenAI ``usage`` object (or Anthropic-style input/output names)."""
    if not isinstance(value, Mapping):
        return None
    prompt = value.get("prompt_tokens", value.get("input_tokens"))
    completion = value.get("completion_tokens", value.get("output_tokens", 0))
    return Usage.checked(prompt, completion)


def usage_from_body(raw: bytes) -> Usage | None:
    """The top-level ``usage`` of a JSON body, found from the end of the body.

    OpenAI-wire servers put ``usage`` last, after the (possibly large) choices or
    embedding vectors, so the search decodes only that object. A ``"usage"`` that is
    part of a JSON string is escaped (``\\"usage\\"``) and skipped. Falls back to
    one full parse when the quick path finds nothing usable.
    """
    end = len(raw)
    while True:
        idx = raw.rfind(_USAGE_KEY, 0, end)
        if idx < 0:
            break
        end = idx
        if idx > 0 and raw[idx - 1] == 0x5C:  # backslash: inside a string
            continue
        tail = raw[idx + len(_USAGE_KEY) :].lstrip()
        if not tail.startswith(b":"):
            continue
        try:
            value, _ = _DECODER.raw_decode(tail[1:].lstrip().decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            break
        if value is None:
            return None
        usage = usage_from_mapping(value)
        if usage is not None:
            return usage
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return usage_from_mapping(doc.get("usage")) if isinstance(doc, dict) else None


def error_event(events: bytes) -> UpstreamError | None:
    """The error a provider sent as a stream event (``data: {"error": ...}``, as
    OpenAI does mid-stream), if ``events`` hold one."""
    if b'"error"' not in events:
        return None
    for event in events.split(b"\n\n"):
        payload = b"\n".join(
            line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
        )
        if b'"error"' not in payload:
            continue
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict) and doc.get("error") and not doc.get("choices"):
            message, code = error_fields(payload)
            return UpstreamError(
                ErrorKind.PROTOCOL,
                f"the provider sent an error event: {message}",
                code=code,
                retriable=False,
            )
    return None


def answer_problem(raw: bytes, usage: Usage | None) -> str | None:
    """Why a 2xx answer body is not an answer, or None. With usage found (the usual
    case) only the ends are looked at; without, the body is parsed once."""
    body = raw.strip()
    if not (body.startswith(b"{") and body.endswith(b"}")):
        return "the answer is not a JSON object"
    if usage is not None and not body[1:].lstrip().startswith(b'"error"'):
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "the answer is not valid JSON"
    if not isinstance(doc, dict):
        return "the answer is not a JSON object"
    if doc.get("error") and not doc.get("choices") and not doc.get("data"):
        message, _ = error_fields(body)
        return f"the provider answered 2xx with an error: {message}"
    return None


class EventFilter(Protocol):
    """What a stream does with each network read: complete chat-completion SSE events
    out, the usage and the terminator noted (:class:`SseFilter`, or a translation from
    another wire such as :class:`~.anthropic_wire.MessagesSse`)."""

    usage: Usage | None
    done: bool

    def push(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


_CR = 0x0D


class SseFilter:
    """Watches forwarded SSE events for ``[DONE]`` and the usage chunk.

    ``push`` takes each network read and returns the complete events in it (a
    partial event waits for the next read), ready to forward: unchanged (no copy)
    unless a usage-only chunk has to be dropped because the client did not ask for
    it. CRLF line ends are normalised to LF. ``flush`` returns a last event that
    lacked its blank line.
    """

    __slots__ = ("_partial", "done", "keep_usage_chunk", "usage")

    def __init__(self, *, keep_usage_chunk: bool, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.keep_usage_chunk = keep_usage_chunk
        self.usage: Usage | None = None
        self.done = False
        self._partial = EventBuffer(max_event_bytes)

    def push(self, chunk: bytes) -> bytes:
        # The common read: whole events with nothing to note (no usage object, error
        # or terminator, LF line ends), none begun by an earlier read, pass as they
        # are, for a few scans of the bytes instead of the calls below (~2 us of a
        # relayed chunk's ~25). A chunk's ``"usage":null`` (every chunk has one once
        # include_usage is asked for, as the sidecar always does) is nothing to note.
        # find() and an int's ``in``: ``bytes in bytes`` costs twice as much on 3.11.
        partial = self._partial
        find = chunk.find
        if (
            not partial.size
            and chunk.endswith(b"\n\n")
            and _CR not in chunk
            and find(_USAGE_COMPACT) < 0
            and find(_USAGE_SPACED) < 0
            and find(b'"error"') < 0
            and find(b"[DONE]") < 0
        ):
            return chunk
        events = partial.split(chunk)
        return self.feed(events) if events else b""

    def flush(self) -> bytes:
        rest = self._partial.take()
        return self.feed(rest + b"\n\n") if rest.strip() else b""

    def feed(self, events: bytes) -> bytes:
        error = error_event(events)
        if error is not None:
            raise error
        if not self.done and _has_done(events):
            self.done = True
        first = _usage_object_at(events)
        if first < 0:
            return events  # the common case: no usage object in this read
        # Events before the first usage object pass untouched; only the rest is split.
        separator = events.rfind(b"\n\n", 0, first)
        start = separator + 2 if separator >= 0 else 0
        kept: list[bytes] = [events[:start]] if start else []
        dropped = False
        for event in events[start:].split(b"\n\n"):
            if not event.strip():
                continue
            if _usage_object_at(event) >= 0 and self._take_usage(event):
                dropped = True
                continue
            kept.append(event + b"\n\n")
        if not dropped:
            return events
        return b"".join(kept)

    def _take_usage(self, event: bytes) -> bool:
        """Record the usage of one event; True when the event should be dropped."""
        payload = b"\n".join(
            line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
        )
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            return False
        if not isinstance(doc, dict):
            return False
        usage = usage_from_mapping(doc.get("usage"))
        if usage is not None:
            self.usage = usage
        return usage is not None and not doc.get("choices") and not self.keep_usage_chunk


def _usage_object_at(data: bytes) -> int:
    """Offset of a ``"usage"`` key whose value is an object (compact or ``": "`` JSON)."""
    compact = data.find(_USAGE_COMPACT)
    spaced = data.find(_USAGE_SPACED)
    if compact < 0:
        return spaced
    return compact if spaced < 0 else min(compact, spaced)


def _has_done(data: bytes) -> bool:
    """Whether the read holds the ``data: [DONE]`` terminator as an event of its own."""
    for marker in (b"data: [DONE]", b"data:[DONE]"):
        at = data.rfind(marker)
        if at >= 0 and (at == 0 or data[at - 1] == 0x0A):
            return True
    return False


def error_fields(raw: bytes) -> tuple[str, str | None]:
    """(message, code) from any provider's error body.

    Shapes: OpenAI / DashScope compatible / Ollama ``/v1``:
    ``{"error": {"message", "type", "param", "code"}}``; Ollama native:
    ``{"error": "text"}``; DashScope native: ``{"code", "message", "request_id"}``.
    """
    try:
        doc = json.loads(raw[:_MAX_ERROR_BODY])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ("non-JSON error body", None)
    if not isinstance(doc, dict):
        return ("unexpected error body", None)
    err = doc.get("error")
    if isinstance(err, dict):
        code = err.get("code") or err.get("type")
        return (str(err.get("message") or "error"), str(code) if code else None)
    if isinstance(err, str):
        return (err, None)
    if "message" in doc:
        code = doc.get("code")
        return (str(doc["message"]), str(code) if code else None)
    return ("error body without a message", None)


def status_error(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    *,
    provider: str,
    model: str,
) -> UpstreamError:
    message, code = error_fields(raw)
    return UpstreamError(
        ErrorKind.STATUS,
        message,
        status=status,
        retry_after=parse_retry_after(headers),
        code=code,
        provider=provider,
        model=model,
    )


def map_exception(
    exc: BaseException, *, provider: str, model: str, partial: bool = False
) -> UpstreamError:
    """An aiohttp / asyncio failure as an ``UpstreamError`` (never with request data)."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        kind, text = ErrorKind.TIMEOUT, "timed out"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        kind, text = ErrorKind.CONNECT, "response body cut short"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        kind, text = ErrorKind.CONNECT, "server disconnected"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind, text = ErrorKind.CONNECT, f"cannot connect ({exc.os_error.__class__.__name__})"
    elif isinstance(exc, aiohttp.ClientError):
        kind, text = ErrorKind.CONNECT, exc.__class__.__name__
    else:
        kind, text = ErrorKind.PROTOCOL, exc.__class__.__name__
    if partial and kind is ErrorKind.CONNECT:
        kind, text = ErrorKind.PROTOCOL, f"stream cut: {text}"
    return UpstreamError(
        kind,
        text,
        provider=provider,
        model=model,
        partial=partial,
        retriable=None if not partial else False,
    )
