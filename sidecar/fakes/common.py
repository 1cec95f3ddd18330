"""What every fake endpoint does before answering: record the request, wait the
configured latency, inject failures, check auth and the model; and the writer that
paces (and, on request, cuts) streams."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .errors import (
    Flavour,
    injected_failure,
    model_forbidden,
    model_missing,
    provider_error,
    unauthorized,
)
from .knobs import FakeState


def compact_json(doc: Any) -> bytes:
    """JSON as providers send it: no spaces, UTF-8 kept as is."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


STATE_KEY: web.AppKey[FakeState] = web.AppKey("aegis_fake_state", FakeState)

_RECORDED_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "accept",
        "user-agent",
        "openai-organization",
        "anthropic-version",
        "anthropic-beta",
        "traceparent",  # W3C trace context, sent on by a tracing gateway
        "tracestate",
    }
)
_CONTENT_FIELDS = frozenset({"messages", "input", "prompt", "system"})


def state_of(request: web.Request) -> FakeState:
    return request.app[STATE_KEY]


def record(
    state: FakeState, request: web.Request, body: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One log entry: path, model, the headers that matter, body fields minus content."""
    headers = {
        k.lower(): v
        for k, v in request.headers.items()
        if k.lower() in _RECORDED_HEADERS or k.lower().startswith("x-")
    }
    entry: dict[str, Any] = {
        "time": time.time(),
        "method": request.method,
        "path": request.path,
        "headers": headers,
        "model": None,
        "stream": None,
        "body": {},
        "messages": 0,
        "status": None,
    }
    if body is not None:
        entry["model"] = body.get("model")
        entry["stream"] = body.get("stream")
        entry["body"] = {k: v for k, v in body.items() if k not in _CONTENT_FIELDS}
        messages = body.get("messages")
        entry["messages"] = len(messages) if isinstance(messages, list) else 0
    state.requests.append(entry)
    return entry


async def read_json(request: web.Request, flavour: Flavour) -> dict[str, Any] | web.Response:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        if flavour == "ollama":
            return provider_error(flavour, 400, "invalid character in request body")
        return provider_error(
            flavour,
            400,
            "We could not parse the JSON body of your request. The API expects a JSON "
            "payload, but what was sent was not valid JSON.",
        )
    if not isinstance(body, dict):
        return provider_error(flavour, 400, "the request body must be a JSON object")
    return body


async def gate(
    state: FakeState, request: web.Request, flavour: Flavour, entry: dict[str, Any]
) -> web.Response | None:
    """Latency, injected failures and auth, in that order; None = go on."""
    knobs = state.knobs
    if knobs.latency_ms > 0:
        await asyncio.sleep(knobs.latency_ms / 1000.0)
    failure = state.take_failure()
    if failure is not None:
        entry["status"] = failure
        return injected_failure(flavour, failure, knobs.retry_after)
    if state.auth_required:
        if flavour == "anthropic":  # the key travels in x-api-key
            header = "Bearer " + request.headers.get("x-api-key", "")
        else:
            header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            entry["status"] = 401
            return unauthorized(flavour, sent=False)
        if knobs.api_key is not None and token.strip() != knobs.api_key:
            entry["status"] = 401
            return unauthorized(flavour, sent=True)
    return None


def check_model(
    state: FakeState, flavour: Flavour, body: Mapping[str, Any], entry: dict[str, Any]
) -> tuple[str, web.Response | None]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        entry["status"] = 400
        if flavour == "ollama":
            return "", provider_error(flavour, 400, "model is required")
        if flavour == "anthropic":
            return "", provider_error(flavour, 400, "model: Field required")
        return "", provider_error(flavour, 400, "you must provide a model parameter", param="model")
    if model in state.knobs.forbidden_models:
        entry["status"] = 403
        return model, model_forbidden(flavour, model)
    if model in state.knobs.missing_models:
        entry["status"] = 404
        return model, model_missing(flavour, model)
    return model, None


STREAM_ERROR_EVENT = (
    b'data: {"error":{"message":"The server had an error while processing your request.",'
    b'"type":"server_error","param":null,"code":null}}\n\n'
)


class PacedWriter:
    """Writes stream chunks with the configured delay; cuts the connection after
    ``cut_after_chunks`` chunks (no terminator), as a dropped upstream would, and
    plays the other hostile-stream knobs (a garbled or huge first event, an error
    event, a cut in the middle of an event, a stall, a drip)."""

    def __init__(self, state: FakeState, request: web.Request, response: web.StreamResponse):
        self._request = request
        self._response = response
        self._knobs = state.knobs
        self._delay = state.knobs.chunk_delay_ms / 1000.0
        self._cut = state.knobs.cut_after_chunks
        self._written = 0
        self.cut = False

    def _abort(self) -> bool:
        self.cut = True
        transport = self._request.transport
        if transport is not None:
            transport.abort()
        return False

    async def write(self, data: bytes) -> bool:
        """Write one chunk; False once the stream has been cut (stop writing)."""
        if self.cut:
            return False
        knobs = self._knobs
        if self._cut is not None and self._written >= self._cut:
            return self._abort()
        if self._delay > 0 and self._written > 0:
            await asyncio.sleep(self._delay)
        if knobs.stall_after_chunks is not None and self._written == knobs.stall_after_chunks:
            await asyncio.sleep(knobs.stall_ms / 1000.0)
        if self._written == 0:
            if knobs.error_body_200:
                await self._send(STREAM_ERROR_EVENT)
                return self._abort()
            if knobs.invalid_json:
                data = b"data: {not json at all\n\n" + data
            if knobs.nested_levels:
                data = b"data: " + nested_json(knobs.nested_levels, b"{}") + b"\n\n" + data
            if knobs.huge_event_bytes:
                data = b'data: {"pad":"' + b"x" * knobs.huge_event_bytes + b'"}\n\n' + data
        if knobs.cut_mid_event is not None and self._written >= knobs.cut_mid_event:
            await self._send(data[: max(1, len(data) // 2)])
            return self._abort()
        if not await self._send(data):
            return False
        self._written += 1
        return True

    async def _send(self, data: bytes) -> bool:
        try:
            if self._knobs.drip_bytes_per_second > 0:
                await drip(self._response, data, self._knobs.drip_bytes_per_second)
            else:
                await self._response.write(data)
        except ConnectionResetError:  # the client went away: stop quietly
            self.cut = True
            return False
        return True


async def drip(response: web.StreamResponse, data: bytes, rate: float) -> None:
    """``data`` one byte at a time, ``rate`` bytes per second."""
    for i in range(len(data)):
        await response.write(data[i : i + 1])
        await asyncio.sleep(1.0 / rate)


def with_usage_override(state: FakeState, usage: dict[str, Any]) -> dict[str, Any]:
    """``usage`` with the ``usage_override`` knob's fields merged in."""
    override = state.knobs.usage_override
    return {**usage, **override} if override else usage


def nested_json(levels: int, document: bytes) -> bytes:
    """``document`` (a JSON object) with a ``"deep"`` member ``levels`` arrays deep."""
    return (
        b'{"deep":'
        + b"[" * levels
        + b"]" * levels
        + (b"," + document[1:] if document != b"{}" else b"}")
    )


async def answer_json(
    request: web.Request, state: FakeState, doc: Any, error: bytes
) -> web.StreamResponse:
    """A 200 JSON answer as the knobs want it: whole, cut in the middle of its JSON
    (``invalid_json``), replaced by ``error`` (``error_body_200``) or dripped."""
    knobs = state.knobs
    body = compact_json(doc)
    if knobs.error_body_200:
        body = error
    elif knobs.invalid_json:
        body = body[: len(body) // 2]
    elif knobs.nested_levels:
        body = nested_json(knobs.nested_levels, body)
    if knobs.drip_bytes_per_second <= 0:
        return web.Response(body=body, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    try:
        await response.prepare(request)
        await drip(response, body, knobs.drip_bytes_per_second)
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response


@dataclass(frozen=True, slots=True)
class Admitted:
    """A model call that passed the checks every fake endpoint starts with."""

    state: FakeState
    body: dict[str, Any]
    entry: dict[str, Any]  # the call's log entry; handlers set its status
    model: str


async def admit(request: web.Request, flavour: Flavour) -> Admitted | web.Response:
    """Parse the JSON body, log the call, apply the knobs (latency, injected
    failures, auth) and check the model; a provider's error answer when one fails."""
    state = state_of(request)
    parsed = await read_json(request, flavour)
    if isinstance(parsed, web.Response):
        record(state, request, None)["status"] = parsed.status
        return parsed
    entry = record(state, request, parsed)
    if state.knobs.record_bodies:
        entry["raw"] = (await request.read()).decode("utf-8", "replace")
    blocked = await gate(state, request, flavour, entry)
    if blocked is not None:
        return blocked
    model, refused = check_model(state, flavour, parsed, entry)
    if refused is not None:
        return refused
    return Admitted(state, parsed, entry, model)
