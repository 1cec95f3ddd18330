"""An upstream's SSE stream cut into whole events, read by read, within a bound.

A network read can end anywhere, so the stream filters (:class:`~.wire.SseFilter`,
:class:`~.anthropic_wire.MessagesSse`) keep the unfinished event until a later read
completes it. An upstream decides how long that event is, so it is bounded
(``listen.limits.maxUpstreamEventBytes``) and kept as the reads that make it up,
joined once when it completes: appending each read to one ``bytes`` copied the whole
event per read, and the freed copies (up to twice the bound alive at once, in blocks
of ever larger sizes) left the process's heap several times the bound per stream
after the event was refused.
"""

from __future__ import annotations

from .base import ErrorKind, UpstreamError

__all__ = ["EventBuffer"]


def _complete_events(data: bytes) -> tuple[bytes, bytes]:
    """(the complete SSE events of ``data``, the partial rest); CRLF line ends
    become LF."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    end = data.rfind(b"\n\n")
    if end < 0:
        return b"", data
    return data[: end + 2], data[end + 2 :]


def _ends_an_event(data: bytes) -> bool:
    # An event ends at a blank line: LF LF, with CRLF for either LF.
    return b"\n\n" in data or b"\n\r\n" in data


class EventBuffer:
    """The unfinished event of one stream, as the reads that make it up."""

    __slots__ = ("_max", "_parts", "_tail", "size")

    def __init__(self, max_event_bytes: int) -> None:
        self._max = max_event_bytes
        self._parts: list[bytes] = []
        self._tail = b""  # their last two bytes: a blank line can straddle two reads
        #: Bytes held: 0 when no event is unfinished. An attribute, not
        #: ``__bool__``: the relay asks on every read.
        self.size = 0

    def split(self, chunk: bytes) -> bytes:
        """The complete events that ``chunk`` ends (LF line ends; ``b""`` while the
        event goes on); raises a protocol :class:`~.base.UpstreamError` once the
        unfinished event is longer than the bound."""
        if self.size and not (_ends_an_event(chunk) or _ends_an_event(self._tail + chunk[:2])):
            self._keep(chunk)
            return b""
        data = b"".join((*self._parts, chunk)) if self.size else chunk
        self._clear()
        events, rest = _complete_events(data)
        del data
        if len(rest) > self._max:
            del rest  # a traceback keeps its frames' locals alive
            raise self._too_long()
        if rest:
            self._keep(rest)
        return events

    def take(self) -> bytes:
        """What is left of the stream (an event without its blank line), emptied."""
        rest = b"".join(self._parts)
        self._clear()
        return rest.replace(b"\r\n", b"\n") if b"\r" in rest else rest

    def _keep(self, part: bytes) -> None:
        self.size += len(part)
        if self.size > self._max:
            self._clear()  # the memory goes now, not with the error
            raise self._too_long()
        self._parts.append(part)
        self._tail = (self._tail + part[-2:])[-2:]

    def _clear(self) -> None:
        self._parts.clear()
        self.size, self._tail = 0, b""

    def _too_long(self) -> UpstreamError:
        return UpstreamError(
            ErrorKind.PROTOCOL,
            f"an upstream stream event is longer than {self._max} bytes",
            retriable=False,
        )
