"""Translation between the chat-completions wire and Anthropic's Messages wire.

The sidecar speaks chat completions inside; a provider of type ``anthropic`` gets
the request as a Messages body and its answer back as a chat completion (whole,
or chunk by chunk for a stream), so every front end can reach it.

Request: system messages become ``system``; ``image_url`` parts ``image`` blocks
(a data URL as a base64 source, else a URL source); an assistant's ``tool_calls``
``tool_use`` blocks; ``tool`` messages ``tool_result`` blocks of a user turn
(consecutive turns of one role are merged, as the API wants them alternating);
``stop`` ``stop_sequences``; ``tool_choice`` ``auto``/``required``/``none``/named
the ``auto``/``any``/``none``/``tool`` choices (``parallel_tool_calls: false``:
``disable_parallel_tool_use``); a JSON-schema ``response_format``
``output_config.format``; ``temperature`` is capped at 1 (Anthropic's maximum).
Not sent: ``user`` (no identifiers leave for a provider that does not need them),
``n`` above 1 (refused: the API has one answer), penalties, seeds, logprobs.

Answer: text blocks become ``content``, ``tool_use`` blocks ``tool_calls``
(``input`` as JSON ``arguments``), thinking blocks are dropped; ``stop_reason``
maps to ``finish_reason``; prompt tokens are input plus cache read and write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .base import ErrorKind, UpstreamError, Usage
from .sse_events import EventBuffer
from .wire import MAX_EVENT_BYTES

ANTHROPIC_VERSION = "2023-06-01"
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_SYSTEM_ROLES = frozenset({"system", "developer"})


def refused(
    message: str, model: str, provider: str, *, code: str = "invalid_value"
) -> UpstreamError:
    """A request the Messages API cannot take: the client's fault, not the provider's."""
    return UpstreamError(
        ErrorKind.STATUS, message, status=400, code=code, provider=provider, model=model
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict)
        )
    return ""


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Chat content (a string or parts) as Anthropic content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            image = part.get("image_url")
            url = str(image.get("url") if isinstance(image, dict) else image)
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                source = {"type": "base64", "media_type": media, "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
        else:
            text = _text([part])
            if text:
                blocks.append({"type": "text", "text": text})
    return blocks


def _arguments(raw: Any) -> Any:
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except (ValueError, RecursionError):
        return {"arguments": raw}
    return value if isinstance(value, dict) else {"value": value}


def _turns(messages: Any) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages if isinstance(messages, list) else ():
        role = message.get("role")
        content = message.get("content")
        if role in _SYSTEM_ROLES:
            system.append(_text(content))
            continue
        if role == "tool":
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": str(message.get("tool_call_id") or ""),
                    "content": _text(content),
                }
            ]
            role = "user"
        else:
            blocks = _blocks(content)
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id") or ""),
                        "name": str(function.get("name") or ""),
                        "input": _arguments(function.get("arguments")),
                    }
                )
            role = "assistant" if role == "assistant" else "user"
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(s for s in system if s), turns


def _tool_choice(body: Mapping[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    out: dict[str, Any] | None = None
    if choice in ("auto", "none"):
        out = {"type": choice}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and function.get("name"):
            out = {"type": "tool", "name": function["name"]}
    if body.get("parallel_tool_calls") is False and body.get("tools"):
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def chat_to_messages(
    body: Mapping[str, Any], model: str, cap: int, *, stream: bool, provider: str
) -> dict[str, Any]:
    """The Messages request for a chat body (``cap``: the completion cap in force)."""
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        message = "Invalid 'n': n > 1 is not supported by Anthropic's Messages API"
        raise refused(message, model, provider)
    system, turns = _turns(body.get("messages"))
    if not turns:
        message = "Invalid 'messages': Anthropic's Messages API needs a user or assistant message"
        raise refused(message, model, provider)
    request: dict[str, Any] = {"model": model, "max_tokens": cap, "messages": turns}
    if system:
        request["system"] = system
    if stream:
        request["stream"] = True
    stop = body.get("stop")
    if stop:
        if isinstance(stop, str):
            request["stop_sequences"] = [stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            request["stop_sequences"] = list(stop)
        else:
            message = "Invalid 'stop': expected a string or an array of strings"
            raise refused(message, model, provider)
    if body.get("tools") is not None and not isinstance(body.get("tools"), list):
        raise refused("Invalid 'tools': expected an array", model, provider)
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)):
        request["temperature"] = min(float(temperature), 1.0)
    if isinstance(body.get("top_p"), (int, float)):
        request["top_p"] = body["top_p"]
    tools = [t.get("function") for t in body.get("tools") or () if isinstance(t, dict)]
    if tools:
        request["tools"] = [
            {
                "name": f.get("name"),
                **({"description": f["description"]} if f.get("description") else {}),
                "input_schema": f.get("parameters") or {"type": "object", "properties": {}},
            }
            for f in tools
            if isinstance(f, dict)
        ]
        choice = _tool_choice(body)
        if choice is not None:
            request["tool_choice"] = choice
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            request["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    return request


def usage_of(usage: Any) -> Usage | None:
    """Anthropic usage as prompt/completion tokens (cache reads and writes are input)."""
    if not isinstance(usage, Mapping):
        return None
    counts = [
        usage.get(k)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    ]
    if Usage.checked(counts[0], 0) is None:
        return None
    extra = [c for c in counts[1:] if c is not None]
    if any(Usage.checked(c, 0) is None for c in extra):
        return None
    return Usage.checked(counts[0] + sum(extra), usage.get("output_tokens"))


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def message_to_chat(raw: bytes, model: str) -> tuple[bytes, Usage | None]:
    """A Messages answer as a chat completion (JSON bytes) and its usage."""
    doc = json.loads(raw)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in doc.get("content") or ():
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    usage = usage_of(doc.get("usage"))
    chat: dict[str, Any] = {
        "id": f"chatcmpl-{doc.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": doc.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH.get(doc.get("stop_reason") or "", "stop"),
            }
        ],
    }
    if usage is not None:
        chat["usage"] = _usage_json(usage)
    return json.dumps(chat, ensure_ascii=False, separators=(",", ":")).encode(), usage


class MessagesSse:
    """Reads Anthropic's stream and writes chat-completion chunks.

    The same face as :class:`~.wire.SseFilter` (``push`` each network read, then
    ``flush``; ``done`` once ``message_stop`` arrived; ``usage``), so the wire
    stream can use either. An ``error`` event raises :class:`UpstreamError`."""

    __slots__ = (
        "_base",
        "_finish",
        "_partial",
        "_provider",
        "_tools",
        "done",
        "keep_usage_chunk",
        "usage",
    )

    def __init__(
        self,
        *,
        keep_usage_chunk: bool,
        model: str,
        provider: str,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.keep_usage_chunk = keep_usage_chunk
        self.usage: Usage | None = None
        self.done = False
        self._partial = EventBuffer(max_event_bytes)
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._finish = "stop"
        self._provider = provider
        self._base: dict[str, Any] = {
            "id": "chatcmpl-",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def push(self, chunk: bytes) -> bytes:
        events = self._partial.split(chunk)
        return b"".join(self._event(e) for e in events.split(b"\n\n") if e)

    def flush(self) -> bytes:
        rest = self._partial.take()
        return self._event(rest) if rest.strip() else b""

    def _event(self, event: bytes) -> bytes:
        payload = b"\n".join(
            line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
        )
        try:
            doc = json.loads(payload) if payload else None
        except (ValueError, RecursionError):
            return b""
        if not isinstance(doc, dict):
            return b""
        try:
            return self._translate(doc)
        except (TypeError, ValueError, AttributeError, KeyError):
            raise UpstreamError(
                ErrorKind.PROTOCOL,
                f"malformed Messages stream event {str(doc.get('type'))[:40]!r}",
                provider=self._provider,
                model=str(self._base["model"]),
                partial=True,
                retriable=False,
            ) from None

    def _translate(self, doc: dict[str, Any]) -> bytes:
        kind = doc.get("type")
        if kind == "message_start":
            message = doc.get("message") or {}
            self._base["id"] = f"chatcmpl-{message.get('id', '')}"
            self._base["model"] = message.get("model") or self._base["model"]
            self.usage = usage_of(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = doc.get("content_block") or {}
            if block.get("type") != "tool_use":
                return self._chunk({"content": block["text"]}) if block.get("text") else b""
            index = self._tools[int(doc.get("index", 0))] = len(self._tools)
            call = {
                "index": index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "content_block_delta":
            delta = doc.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                index = self._tools.get(int(doc.get("index", 0)), 0)
                piece = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return self._chunk({"tool_calls": [piece]})
            return b""  # thinking, signatures, citations: not part of a chat answer
        if kind == "message_delta":
            reason = (doc.get("delta") or {}).get("stop_reason")
            self._finish = _FINISH.get(reason or "", "stop")
            self._update_usage(doc.get("usage"))
            return b""
        if kind == "message_stop":
            self.done = True
            out = self._chunk({}, self._finish)
            if self.keep_usage_chunk and self.usage is not None:
                final = dict(self._base)
                final["choices"] = []
                final["usage"] = _usage_json(self.usage)
                out += b"data: " + json.dumps(final, separators=(",", ":")).encode() + b"\n\n"
            return out + b"data: [DONE]\n\n"
        if kind == "error":
            error = doc.get("error") or {}
            raise UpstreamError(
                ErrorKind.PROTOCOL,
                f"{error.get('type', 'error')}: {error.get('message', '')}",
                provider=self._provider,
                model=str(self._base["model"]),
                partial=True,
                retriable=False,
            )
        return b""  # ping and events added later

    def _update_usage(self, usage: Any) -> None:
        """``message_delta`` usage is cumulative; input counts may come again or not."""
        if not isinstance(usage, Mapping):
            return
        before = self.usage
        merged = {
            "input_tokens": before.prompt_tokens if before else 0,
            "output_tokens": usage.get("output_tokens", before.completion_tokens if before else 0),
        }
        if usage.get("input_tokens") is not None:
            counted = usage_of({**usage, "output_tokens": 0})
            merged["input_tokens"] = counted.prompt_tokens if counted else None
        self.usage = usage_of(merged)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        doc = dict(self._base)
        doc["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return (
            b"data: "
            + json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
            + b"\n\n"
        )
