"""Anthropic's Messages API: ``POST /v1/messages`` and ``GET /v1/models``.

Wire facts (Anthropic's API reference): the key in ``x-api-key``, a required
``anthropic-version`` header, required ``model``, ``max_tokens`` and ``messages``;
``system`` as a string or text blocks; content blocks ``text``, ``image``
(``source`` base64 or url), ``tool_use`` and ``tool_result``; tools as ``{name,
description, input_schema}`` with ``tool_choice`` ``auto``/``any``/``tool``/``none``.
A message answer is ``{id, type: "message", role, model, content, stop_reason
(end_turn | max_tokens | stop_sequence | tool_use), stop_sequence, usage
{input_tokens, output_tokens, cache_*}}``. A stream is ``event:``/``data:`` pairs:
``message_start`` (usage with the input tokens), per block ``content_block_start``,
``content_block_delta`` (``text_delta`` / ``input_json_delta``),
``content_block_stop``, a ``ping``, then ``message_delta`` (stop reason, usage with
the output tokens) and ``message_stop``; no ``[DONE]``.

Counting follows :mod:`.content`; the system prompt counts as one more message.
A stop sequence found in the reply ends it there (``stop_sequence``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .common import (
    Admitted,
    PacedWriter,
    admit,
    answer_json,
    compact_json,
    gate,
    record,
    state_of,
    with_usage_override,
)
from .content import (
    TOOL_ARGUMENTS,
    TOOL_CALL_TOKENS,
    apply_cap,
    count_prompt,
    reply_words,
    stream_pieces,
)
from .errors import provider_error

VERSIONS = frozenset({"2023-06-01", "2023-01-01"})
ERROR_200 = compact_json(
    {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
)


def _invalid(message: str) -> web.Response:
    return provider_error("anthropic", 400, message)


def _problem(request: web.Request, body: Mapping[str, Any]) -> str | None:
    version = request.headers.get("anthropic-version")
    if version is None:
        return "anthropic-version: header is required"
    if version not in VERSIONS:
        return f"anthropic-version: invalid version {version!r}"
    cap = body.get("max_tokens")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        return "max_tokens: Field required" if cap is None else "max_tokens: must be >= 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return (
            "messages: Field required"
            if messages is None
            else "messages: at least one message is required"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        if isinstance(content, list) and not all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in content
        ):
            return f"messages.{i}.content: every block needs a type"
        if not isinstance(content, (str, list)):
            return f"messages.{i}.content: Input should be a valid list"
    return None


def _system_message(system: Any) -> list[dict[str, Any]]:
    if isinstance(system, str) and system:
        return [{"content": system}]
    if isinstance(system, list) and system:
        return [{"content": system}]
    return []


def _chosen_tool(body: Mapping[str, Any], enabled: bool) -> str | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind == "none":
        return None
    if kind == "tool" and isinstance(choice, Mapping) and isinstance(choice.get("name"), str):
        return str(choice["name"])
    if not (enabled or kind == "any"):
        return None
    first = tools[0]
    return str(first["name"]) if isinstance(first, Mapping) and first.get("name") else None


def _stop_at(words: list[str], stops: Any) -> tuple[list[str], str | None]:
    """The reply up to the first stop sequence found in it, and that sequence."""
    if not isinstance(stops, list):
        return words, None
    text = " ".join(words)
    hits = [(text.find(s), s) for s in stops if isinstance(s, str) and s and s in text]
    if not hits:
        return words, None
    at, stop = min(hits)
    return text[:at].split(), stop


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": completion,
        "service_tier": "standard",
    }


async def messages(request: web.Request) -> web.StreamResponse:
    call = await admit(request, "anthropic")
    if not isinstance(call, Admitted):
        return call
    state, body, entry, model = call.state, call.body, call.entry, call.model
    problem = _problem(request, body)
    if problem is not None:
        entry["status"] = 400
        return _invalid(problem)
    knobs = state.knobs
    prompt_tokens, images = count_prompt([*_system_message(body.get("system")), *body["messages"]])
    entry["images"] = images
    tool = _chosen_tool(body, knobs.tool_calls)
    words, finish = apply_cap(
        reply_words(state.kind, model, prompt_tokens, knobs.reply), body["max_tokens"]
    )
    words, stop = _stop_at(words, body.get("stop_sequences"))
    stop_reason = "max_tokens" if finish == "length" else "end_turn"
    if stop is not None:
        stop_reason = "stop_sequence"
    if tool is not None:
        stop_reason, stop, completion_tokens = "tool_use", None, TOOL_CALL_TOKENS
    else:
        completion_tokens = len(words)
    mid = f"msg_fake{state.next_id():020d}"
    entry["status"] = 200
    metadata = body.get("metadata")
    state.invoice.bill(
        request,
        knobs.prices,
        call_id=mid,
        model=model,
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
        tag=metadata.get("user_id") if isinstance(metadata, dict) else None,
    )
    usage = None
    if not knobs.omit_usage:
        usage = with_usage_override(state, _usage(prompt_tokens, completion_tokens))
    if body.get("stream") is True:
        return await _stream(
            request,
            mid=mid,
            model=model,
            words=words,
            tool=tool,
            stop_reason=stop_reason,
            stop=stop,
            usage=usage,
        )
    content: list[dict[str, Any]]
    if tool is not None:
        content = [
            {"type": "tool_use", "id": f"toolu_{mid[4:]}", "name": tool, "input": {"fake": True}}
        ]
    else:
        content = [{"type": "text", "text": " ".join(words)}]
    doc: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop,
    }
    if usage is not None:
        doc["usage"] = usage
    return await answer_json(request, state, doc, ERROR_200)


def _event(kind: str, doc: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + compact_json({"type": kind, **doc}) + b"\n\n"


async def _stream(
    request: web.Request,
    *,
    mid: str,
    model: str,
    words: list[str],
    tool: str | None,
    stop_reason: str,
    stop: str | None,
    usage: dict[str, Any] | None,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    try:
        await response.prepare(request)
    except ConnectionResetError:
        return response
    writer = PacedWriter(state_of(request), request, response)
    start_usage = {**usage, "output_tokens": 1} if usage is not None else _usage(0, 1)
    message: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events = [_event("message_start", {"message": message}), _event("ping", {})]
    if tool is not None:
        block = {"type": "tool_use", "id": f"toolu_{mid[4:]}", "name": tool, "input": {}}
        half = len(TOOL_ARGUMENTS) // 2
        pieces = [TOOL_ARGUMENTS[:half], TOOL_ARGUMENTS[half:]]
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in stream_pieces(words)]
    events.append(_event("content_block_start", {"index": 0, "content_block": block}))
    events += [_event("content_block_delta", {"index": 0, "delta": d}) for d in deltas]
    events.append(_event("content_block_stop", {"index": 0}))
    final: dict[str, Any] = {"delta": {"stop_reason": stop_reason, "stop_sequence": stop}}
    final["usage"] = {"output_tokens": usage["output_tokens"]} if usage is not None else {}
    events.append(_event("message_delta", final))
    events.append(_event("message_stop", {}))
    for event in events:
        if not await writer.write(event):
            return response
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def models(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    entry = record(state, request, None)
    blocked = await gate(state, request, "anthropic", entry)
    if blocked is not None:
        return blocked
    entry["status"] = 200
    data = [
        {
            "type": "model",
            "id": m,
            "display_name": m.replace("-", " ").title(),
            "created_at": "2025-09-29T00:00:00Z",
        }
        for m in state.models
    ]
    doc = {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    return web.Response(body=compact_json(doc), content_type="application/json")
