"""Ollama's native API: ``POST /api/chat``, ``POST /api/embed``, ``GET /api/tags``.

Wire facts (Ollama ``docs/api.md``): ``/api/chat`` streams NDJSON by default
(``application/x-ndjson``, one object per line with ``message.content`` pieces and
``done: false``); the last object has ``done: true``, ``done_reason`` and the
statistics ``total_duration``, ``load_duration``, ``prompt_eval_count``,
``prompt_eval_duration``, ``eval_count``, ``eval_duration`` (nanoseconds);
``"stream": false`` answers one JSON object. Images are base64 strings in a
message's ``images`` list. Tool calls carry ``arguments`` as an object. Errors are
``{"error": "text"}``. ``/api/embed`` takes ``input`` (string or list) and answers
``embeddings`` plus ``prompt_eval_count``.
"""

from __future__ import annotations

import binascii
import contextlib
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .common import (
    Admitted,
    PacedWriter,
    admit,
    compact_json,
    gate,
    record,
    state_of,
)
from .content import (
    TOOL_CALL_TOKENS,
    apply_cap,
    chosen_tool,
    completion_cap,
    count_prompt,
    embedding_inputs,
    embedding_vector,
    reply_words,
    stream_pieces,
)
from .errors import provider_error

_NS_PER_TOKEN = 20_000_000


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _bad_image(messages: list[Any]) -> str | None:
    for message in messages:
        images = message.get("images") if isinstance(message, dict) else None
        if not isinstance(images, list):
            continue
        for image in images:
            if not isinstance(image, str):
                return "invalid image input"
            try:
                binascii.a2b_base64(image.encode("ascii"), strict_mode=True)
            except (binascii.Error, UnicodeEncodeError, ValueError):
                return "illegal base64 data at input byte 0"
    return None


async def chat(request: web.Request) -> web.StreamResponse:
    call = await admit(request, "ollama")
    if not isinstance(call, Admitted):
        return call
    state, body, entry, model = call.state, call.body, call.entry, call.model
    messages = body.get("messages")
    if not isinstance(messages, list):
        messages = []
    problem = _bad_image(messages)
    if problem is not None:
        entry["status"] = 400
        return provider_error("ollama", 400, problem)
    knobs = state.knobs
    prompt_tokens, images = count_prompt(messages)
    entry["images"] = images
    tool = chosen_tool(body, knobs.tool_calls)
    words, finish = apply_cap(
        reply_words(state.kind, model, prompt_tokens, knobs.reply), completion_cap(body)
    )
    completion_tokens = TOOL_CALL_TOKENS if tool is not None else len(words)
    stats: dict[str, Any] = {
        "total_duration": (prompt_tokens + completion_tokens) * _NS_PER_TOKEN + 1_000_000,
        "load_duration": 1_000_000,
    }
    if not knobs.omit_usage:
        stats.update(
            prompt_eval_count=prompt_tokens,
            prompt_eval_duration=prompt_tokens * _NS_PER_TOKEN,
            eval_count=completion_tokens,
            eval_duration=completion_tokens * _NS_PER_TOKEN,
        )
    message: dict[str, Any] = {"role": "assistant", "content": " ".join(words)}
    if tool is not None:
        message["content"] = ""
        message["tool_calls"] = [{"function": {"name": tool, "arguments": {"fake": True}}}]
    entry["status"] = 200
    if body.get("stream") is False:
        doc = {
            "model": model,
            "created_at": _now(),
            "message": message,
            "done_reason": finish,
            "done": True,
            **stats,
        }
        return web.Response(body=compact_json(doc), content_type="application/json")

    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    try:
        await response.prepare(request)
    except ConnectionResetError:  # the client gave up during the latency
        return response
    writer = PacedWriter(state, request, response)
    lines: list[dict[str, Any]] = []
    if tool is not None:
        lines.append({"model": model, "created_at": _now(), "message": message, "done": False})
    else:
        for piece in stream_pieces(words):
            lines.append(
                {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": piece},
                    "done": False,
                }
            )
    lines.append(
        {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done_reason": finish,
            "done": True,
            **stats,
        }
    )
    for line in lines:
        if not await writer.write(compact_json(line) + b"\n"):
            return response
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def embed(request: web.Request) -> web.StreamResponse:
    call = await admit(request, "ollama")
    if not isinstance(call, Admitted):
        return call
    state, body, entry, model = call.state, call.body, call.entry, call.model
    inputs = embedding_inputs(body.get("input"))
    if not inputs:
        entry["status"] = 400
        return provider_error("ollama", 400, "invalid input type")
    dims = state.knobs.embedding_dims
    doc: dict[str, Any] = {
        "model": model,
        "embeddings": [embedding_vector(text, i, dims) for i, (text, _) in enumerate(inputs)],
        "total_duration": 14_143_917,
        "load_duration": 1_019_500,
    }
    if not state.knobs.omit_usage:
        doc["prompt_eval_count"] = sum(t for _, t in inputs)
    entry["status"] = 200
    return web.Response(body=compact_json(doc), content_type="application/json")


async def tags(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    entry = record(state, request, None)
    blocked = await gate(state, request, "ollama", entry)
    if blocked is not None:
        return blocked
    entry["status"] = 200
    models = []
    for name in state.models:
        full = name if ":" in name else f"{name}:latest"
        digest = binascii.hexlify(full.encode()).decode().ljust(64, "0")[:64]
        models.append(
            {
                "name": full,
                "model": full,
                "modified_at": "2025-01-01T00:00:00Z",
                "size": 1_000_000_000,
                "digest": digest,
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "fake",
                    "families": ["fake"],
                    "parameter_size": "4B",
                    "quantization_level": "Q4_K_M",
                },
            }
        )
    return web.Response(body=compact_json({"models": models}), content_type="application/json")
