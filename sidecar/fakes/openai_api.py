"""The OpenAI wire as served by OpenAI, DashScope compatible mode and Ollama's ``/v1``.

Wire facts reproduced (see the report in the package docstring for sources):

* non-stream ``chat.completion`` with ``usage``; SSE stream of
  ``chat.completion.chunk`` events ``data: {...}\\n\\n`` ending ``data: [DONE]``;
  a final chunk with empty ``choices`` and the ``usage`` only when
  ``stream_options.include_usage`` is true (every other chunk then has
  ``"usage": null``); tool calls streamed as ``delta.tool_calls`` fragments;
* OpenAI refuses ``stream_options`` on a non-stream request (400);
* DashScope: ``reasoning_content`` for thinking models; hybrid-thinking models with
  thinking on answer 400 to a non-stream call; thinking-only models refuse
  ``enable_thinking: false``; QwQ/QVQ are stream-only; ``vl_high_resolution_images``
  raises the image token count;
* embeddings as floats or, when ``encoding_format`` is ``base64`` (the openai SDK's
  default), little-endian float32 in base64.
"""

from __future__ import annotations

import base64
import contextlib
import struct
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

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
    REASONING_TEXT,
    TOOL_ARGUMENTS,
    TOOL_CALL_TOKENS,
    apply_cap,
    chosen_tool,
    completion_cap,
    count_prompt,
    embedding_inputs,
    embedding_vector,
    last_user_text,
    reply_words,
    stream_pieces,
)
from .errors import Flavour, provider_error
from .knobs import Knobs

ERROR_200 = compact_json(
    {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
)
_FINGERPRINT = {"openai": "fp_fake", "dashscope": None, "ollama_v1": "fp_ollama"}
_OWNER = {"openai": "system", "dashscope": "system", "ollama_v1": "library"}


def _usage(flavour: Flavour, prompt: int, completion: int, reasoning: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if flavour == "openai":
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    elif flavour == "dashscope" and reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def _dashscope_thinking(
    knobs: Knobs, model: str, body: Mapping[str, Any], stream: bool
) -> tuple[bool, web.Response | None]:
    flag = body.get("enable_thinking")
    lowered = model.lower()
    thinking_only = "thinking" in lowered or lowered.startswith(("qwq", "qvq"))
    if thinking_only:
        if flag is False:
            return False, provider_error(
                "dashscope",
                400,
                "The value of the enable_thinking parameter is restricted to True.",
                code="invalid_parameter_error",
            )
        thinking = True
    elif model in knobs.thinking_default_models:
        thinking = flag is not False
    elif model in knobs.hybrid_thinking_models:
        thinking = flag is True
    else:
        thinking = False
    if not stream and model in knobs.stream_only_models:
        return thinking, provider_error(
            "dashscope",
            400,
            "This model only support stream mode, please enable the stream parameter "
            "to access the model.",
            code="invalid_parameter_error",
        )
    if not stream and thinking and not thinking_only:
        return thinking, provider_error(
            "dashscope",
            400,
            "parameter.enable_thinking must be set to false for non-streaming calls",
            code="invalid_parameter_error",
        )
    return thinking, None


def chat_handler(flavour: Flavour) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        call = await admit(request, flavour)
        if not isinstance(call, Admitted):
            return call
        state, body, entry, model = call.state, call.body, call.entry, call.model
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            entry["status"] = 400
            return provider_error(
                flavour,
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        stream = body.get("stream") is True
        if not stream and body.get("stream_options") is not None and flavour == "openai":
            entry["status"] = 400
            return provider_error(
                flavour,
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        knobs = state.knobs
        thinking = False
        if flavour == "dashscope":
            thinking, refused = _dashscope_thinking(knobs, model, body, stream)
            if refused is not None:
                entry["status"] = refused.status
                return refused
        high_res = flavour == "dashscope" and body.get("vl_high_resolution_images") is True
        prompt_tokens, images = count_prompt(messages, high_res=high_res)
        entry["images"] = images
        tool = chosen_tool(body, knobs.tool_calls)
        words, finish = apply_cap(
            reply_words(
                state.kind,
                model,
                prompt_tokens,
                last_user_text(messages) if knobs.echo else knobs.reply,
            ),
            completion_cap(body),
        )
        reasoning_tokens = len(REASONING_TEXT.split()) if thinking else 0
        if tool is not None:
            completion_tokens, finish = TOOL_CALL_TOKENS, "tool_calls"
        else:
            completion_tokens = len(words)
        usage = None
        if not knobs.omit_usage:
            usage = with_usage_override(
                state,
                _usage(
                    flavour, prompt_tokens, completion_tokens + reasoning_tokens, reasoning_tokens
                ),
            )
        cid = f"chatcmpl-fake{state.next_id()}"
        entry["status"] = 200
        state.invoice.bill(
            request,
            knobs.prices,
            call_id=cid,
            model=model,
            input_tokens=prompt_tokens,
            output_tokens=completion_tokens + reasoning_tokens,
            tag=body.get("user"),
        )
        if stream:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await _stream(
                request,
                flavour=flavour,
                cid=cid,
                model=model,
                words=words,
                finish=finish,
                tool=tool,
                thinking=thinking,
                usage=usage if include_usage else None,
                include_usage=include_usage,
            )
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(words)}
        if flavour == "openai":
            message["refusal"] = None
            message["annotations"] = []
        if thinking:
            message["reasoning_content"] = REASONING_TEXT
        if tool is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": f"call_{cid[9:]}",
                    "type": "function",
                    "function": {"name": tool, "arguments": TOOL_ARGUMENTS},
                }
            ]
        doc: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
        }
        if usage is not None:
            doc["usage"] = usage
        if flavour == "openai":
            doc["service_tier"] = "default"
        doc["system_fingerprint"] = _FINGERPRINT[flavour]
        return await answer_json(request, state, doc, ERROR_200)

    return handle


async def _stream(
    request: web.Request,
    *,
    flavour: Flavour,
    cid: str,
    model: str,
    words: list[str],
    finish: str,
    tool: str | None,
    thinking: bool,
    usage: dict[str, Any] | None,
    include_usage: bool,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    try:
        await response.prepare(request)
    except ConnectionResetError:  # the client gave up during the latency
        return response
    writer = PacedWriter(state_of(request), request, response)
    base: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": _FINGERPRINT[flavour],
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        doc = dict(base)
        doc["choices"] = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if include_usage:
            doc["usage"] = None
        return b"data: " + compact_json(doc) + b"\n\n"

    first: dict[str, Any] = {"role": "assistant", "content": ""}
    if flavour == "openai":
        first["refusal"] = None
    events = [chunk(first)]
    if thinking:
        events += [
            chunk({"content": None, "reasoning_content": piece})
            for piece in stream_pieces(REASONING_TEXT.split())
        ]
    if tool is not None:
        call_id = f"call_{cid[9:]}"
        events.append(
            chunk(
                {
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": tool, "arguments": ""},
                        }
                    ],
                }
            )
        )
        events.append(
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": TOOL_ARGUMENTS}}]})
        )
    else:
        events += [chunk({"content": piece}) for piece in stream_pieces(words)]
    events.append(chunk({}, finish))
    if usage is not None:
        final = dict(base)
        final["choices"] = []
        final["usage"] = usage
        events.append(b"data: " + compact_json(final) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    for event in events:
        if not await writer.write(event):
            return response
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def embeddings_handler(flavour: Flavour) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        call = await admit(request, flavour)
        if not isinstance(call, Admitted):
            return call
        state, body, entry, model = call.state, call.body, call.entry, call.model
        inputs = embedding_inputs(body.get("input"))
        if not inputs:
            entry["status"] = 400
            return provider_error(flavour, 400, "'input' is a required property", param="input")
        as_base64 = body.get("encoding_format") == "base64"
        dims = state.knobs.embedding_dims
        data = []
        for index, (text, _) in enumerate(inputs):
            vector = embedding_vector(text, index, dims)
            value: Any = vector
            if as_base64:
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = sum(t for _, t in inputs)
        doc: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if not state.knobs.omit_usage:
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
            doc["usage"] = with_usage_override(state, usage)
        entry["status"] = 200
        state.invoice.bill(
            request,
            state.knobs.prices,
            call_id=f"embd-fake{state.next_id()}",
            model=model,
            input_tokens=tokens,
            output_tokens=0,
            tag=body.get("user"),
        )
        return await answer_json(request, state, doc, ERROR_200)

    return handle


def models_handler(flavour: Flavour) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = state_of(request)
        entry = record(state, request, None)
        blocked = await gate(state, request, flavour, entry)
        if blocked is not None:
            return blocked
        entry["status"] = 200
        data = [
            {"id": m, "object": "model", "created": 1715367049, "owned_by": _OWNER[flavour]}
            for m in state.models
        ]
        return web.Response(
            body=compact_json({"object": "list", "data": data}), content_type="application/json"
        )

    return handle
