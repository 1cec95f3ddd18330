"""A request within the sidecar's bounds: headers, the JSON body, counts, concurrency.

Every bound is a setting (``listen.limits``, ``listen.maxBodyBytes``) and every
refusal a 4xx that names what was over it, in the endpoint's own error shape:

* headers over ``maxHeaderBytes`` together: 431; a header value that is not UTF-8: 400;
* a body over ``maxBodyBytes``: 413; one that does not arrive within
  ``clientTimeoutSeconds``: 408; not UTF-8, not JSON, not an object: 400;
* nesting deeper than ``maxJsonDepth``, a string holding a lone UTF-16 surrogate
  (``"\\ud800"`` is valid JSON but no Unicode text, and nothing downstream could
  encode it), more than ``maxMessages`` / ``maxTools`` / ``maxContentParts``
  items: 400 naming the field;
* more than ``maxConcurrentRequests`` model requests at once: 429 with
  ``Retry-After`` (:class:`Gate`), rather than a queue without bound.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from aiohttp import hdrs, web

from ..contract import LimitsSpec
from ..errors import BadRequest, ClientError, RequestTooLarge
from ..frontends import Api

_SURROGATE = re.compile("[\ud800-\udfff]")
# A run of 19 digits or more may be an integer beyond 64 bits, which orjson reads as a
# float; such a body (rare: long digit runs in text trigger it too) takes the stdlib's path.
# Found by mapping every digit to "0" and anything else to " " (a C loop; a regular
# expression search costs ten times as much as orjson's whole parse).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGITS = b"0" * 19
_CONTAINERS = (dict, list)
# A field path element: a key, or an index into an array.
Step = str | int


class Gate:
    """Model requests in flight, at most ``cap`` of them (0: no cap)."""

    __slots__ = ("cap", "inflight")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.inflight = 0

    def enter(self) -> None:
        if self.cap and self.inflight >= self.cap:
            raise ClientError(
                f"the sidecar is serving its limit of {self.cap} concurrent requests; "
                "retry shortly",
                status=429,
                code="too_many_concurrent_requests",
                headers={"Retry-After": "1"},
            )
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1


def check_headers(request: web.Request, limits: LimitsSpec) -> None:
    """431 over ``maxHeaderBytes``; 400 for a header value that is not UTF-8 (the
    HTTP parser hands such bytes on as lone surrogates)."""
    raw = request.raw_headers
    size = 4 * len(raw)
    ascii_only = True
    for raw_name, raw_value in raw:
        size += len(raw_name) + len(raw_value)
        ascii_only = ascii_only and raw_value.isascii()
    if size > limits.max_header_bytes:
        raise ClientError(
            f"request headers take {size} bytes, over the sidecar limit of "
            f"{limits.max_header_bytes} bytes",
            status=431,
            code="request_header_fields_too_large",
        )
    if ascii_only:
        return  # the parser decodes non-ASCII bytes only: nothing to look for below
    for name, value in request.headers.items():
        if not value.isascii() and _SURROGATE.search(value):
            raise BadRequest(
                f"Header {name[:64]} is not valid UTF-8 text.",
                param=name[:64],
                code="invalid_header",
            )


async def read_json(
    request: web.Request, max_body: int, limits: LimitsSpec, api: Api
) -> dict[str, Any]:
    """The JSON object of the body: 413 over the limit (from ``Content-Length``
    before reading), 415 for a declared type that is not JSON (no ``Content-Type``
    at all is read as JSON), 408 when it does not arrive in time, 400 for anything
    that is not one JSON object of UTF-8 text within the depth and count bounds."""
    if request.content_length is not None and request.content_length > max_body:
        raise RequestTooLarge(f"request body exceeds the sidecar limit of {max_body} bytes")
    declared = request.headers.get(hdrs.CONTENT_TYPE)
    # The usual header as it is, without aiohttp's parse of it (~3 us a request).
    if declared is not None and declared != _JSON and not _is_json(request.content_type):
        raise ClientError(
            f"Content-Type {request.content_type!r} is not supported; send the body as JSON "
            "with Content-Type: application/json",
            status=415,
            code="unsupported_media_type",
            param="Content-Type",
        )
    if request.content.is_eof():
        # Already all here (a small body arrives with its headers): reading it cannot
        # wait for the client, so no timer is armed (~3 us a request).
        raw = await request.read()
    else:
        raw = await _read_timed(request, limits)
    if not raw:
        raise BadRequest("request body is empty; send a JSON object", code="invalid_json")
    body, strict = _loads(raw, limits, api)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    check_body(body, limits, api, surrogates=not strict)
    return body


async def _read_timed(request: web.Request, limits: LimitsSpec) -> bytes:
    """The body, or 408 when it does not arrive within ``clientTimeoutSeconds``."""
    try:
        async with asyncio.timeout(limits.client_timeout_seconds):
            return await request.read()
    except TimeoutError:
        raise ClientError(
            f"the request body did not arrive within {limits.client_timeout_seconds:g} s",
            status=408,
            code="request_timeout",
        ) from None


def _loads(raw: bytes, limits: LimitsSpec, api: Api) -> tuple[Any, bool]:
    """The JSON value of ``raw`` and whether orjson read it: parsed once, by orjson
    when it reads the body as the stdlib would; anything it refuses (or might read
    differently: ``NaN``, numbers out of its range, escaped lone surrogates) takes the
    stdlib's path, whose answer and error messages are the API's."""
    if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError:
            pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"request body is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            code="invalid_json",
        ) from None
    try:
        return json.loads(text), False
    except json.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise _too_deep((), limits.max_json_depth, api) from None


_JSON = "application/json"


def _is_json(content_type: str) -> bool:
    return content_type == _JSON or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def check_body(
    body: dict[str, Any], limits: LimitsSpec, api: Api, *, surrogates: bool = True
) -> None:
    """400 naming the field for nesting, lone surrogates and counts over the bounds.
    ``surrogates=False``: the body cannot hold a lone surrogate (orjson parsed it, and
    it refuses them), so only its containers are walked, for their depth."""
    clean = _clean(body, limits.max_json_depth) if surrogates else _shallow(body, limits)
    if not clean:
        path, deep = _offender(body, limits.max_json_depth)
        if deep:
            raise _too_deep(path, limits.max_json_depth, api)
        where = field_path(path, api) or "body"
        raise BadRequest(
            f"Invalid '{where}': the text holds a lone UTF-16 surrogate (such as \\ud800), "
            "which is not a Unicode character; send valid UTF-8 text.",
            param=where,
            code="invalid_value",
        )
    _check_counts(body, limits, api)


def _clean(body: dict[str, Any], max_depth: int) -> bool:
    """The fast pass: no container deeper than ``max_depth``, no lone surrogate."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                return False
        elif isinstance(value, dict):
            if depth > max_depth:
                return False
            for key, item in value.items():
                if not key.isascii() and _SURROGATE.search(key):
                    return False
                if isinstance(item, (str, dict, list)):
                    stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > max_depth:
                return False
            stack.extend(
                (item, depth + 1) for item in value if isinstance(item, (str, *_CONTAINERS))
            )
    return True


def _shallow(body: dict[str, Any], limits: LimitsSpec) -> bool:
    """No container deeper than ``maxJsonDepth`` (strings are not visited)."""
    max_depth = limits.max_json_depth
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            return False
        for item in value.values() if isinstance(value, dict) else value:
            if isinstance(item, _CONTAINERS):
                stack.append((item, depth + 1))
    return True


def _offender(body: dict[str, Any], max_depth: int) -> tuple[tuple[Step, ...], bool]:
    """The path of the first thing :func:`_clean` refused, and whether it is depth."""
    stack: list[tuple[Any, tuple[Step, ...]]] = [(body, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path, False
            continue
        if isinstance(value, _CONTAINERS) and len(path) + 1 > max_depth:
            return path, True
        for key, item in _children(value):
            if isinstance(key, str) and _SURROGATE.search(key):
                return (*path, key), False
            stack.append((item, (*path, key)))
    return (), False  # pragma: no cover - only called after _clean found something


def _children(value: Any) -> Iterator[tuple[Step, Any]]:
    if isinstance(value, dict):
        yield from value.items()
    elif isinstance(value, list):
        yield from enumerate(value)


def field_path(path: tuple[Step, ...], api: Api) -> str:
    """``messages[0].content`` (OpenAI's way of writing a path) or
    ``messages.0.content`` (Anthropic's, on the Messages API)."""
    out = ""
    for step in path:
        if isinstance(step, int) and api is not Api.MESSAGES:
            out += f"[{step}]"
        else:
            out += f".{step}" if out else str(step)
    return out


def _too_deep(path: tuple[Step, ...], limit: int, api: Api) -> BadRequest:
    where = field_path(path, api) or "body"
    return BadRequest(
        f"Invalid '{where}': JSON nested deeper than the sidecar limit of {limit} levels.",
        param=where,
        code="invalid_value",
    )


# The arrays each API's body may hold, and which bound each one is held to.
_LISTS: dict[Api, tuple[tuple[str, str], ...]] = {
    Api.CHAT: (("messages", "max_messages"), ("tools", "max_tools")),
    Api.EMBEDDINGS: (("input", "max_messages"),),
    Api.RESPONSES: (("input", "max_messages"), ("tools", "max_tools")),
    Api.MESSAGES: (
        ("messages", "max_messages"),
        ("tools", "max_tools"),
        ("system", "max_content_parts"),
    ),
}


def _check_counts(body: Mapping[str, Any], limits: LimitsSpec, api: Api) -> None:
    for key, bound in _LISTS[api]:
        items = body.get(key)
        if not isinstance(items, list):
            continue
        _at_most(items, getattr(limits, bound), (key,), api, bound)
        if key not in ("messages", "input"):
            continue
        for i, item in enumerate(items):
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, list):
                _at_most(
                    content, limits.max_content_parts, (key, i, "content"), api, "max_content_parts"
                )


def _at_most(items: list[Any], limit: int, path: tuple[Step, ...], api: Api, bound: str) -> None:
    if len(items) > limit:
        where = field_path(path, api)
        setting = "".join(w.capitalize() if i else w for i, w in enumerate(bound.split("_")))
        raise BadRequest(
            f"Invalid '{where}': {len(items)} items, over the sidecar limit of {limit} "
            f"(listen.limits.{setting}).",
            param=where,
            code="array_above_max_length",
        )
