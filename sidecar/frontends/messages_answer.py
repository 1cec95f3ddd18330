"""Chat completions answered as Anthropic Messages: a whole ``message`` or its stream.

The stream follows Anthropic's event order: ``message_start`` (usage not yet
known: the upstream reports it at the end, so it starts at zero),
``content_block_start`` / ``content_block_delta`` (``text_delta`` or
``input_json_delta``) / ``content_block_stop`` per block, ``message_delta`` with
the stop reason and the cumulative usage (input tokens included, which the SDKs
take over), then ``message_stop``. A stream that breaks ends with an
``event: error``. Message ids are ``msg_<ledger request id>``. A chat finish
reason of ``stop`` cannot say whether a stop sequence ended the answer, so it is
reported as ``end_turn``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .chunks import completion_parts, deltas, usage_counts

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish: str | None) -> str:
    return _STOP_REASONS.get(finish or "stop", "end_turn")


def tool_input(arguments: str) -> Any:
    """A tool call's arguments as the object Anthropic's ``input`` holds."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except (ValueError, RecursionError):
        return {"arguments": arguments}  # the model wrote no JSON: keep what it wrote
    return value if isinstance(value, dict) else {"value": value}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def chat_to_message(raw: bytes, request_id: str) -> bytes:
    """A whole chat completion as an Anthropic ``message`` (JSON bytes)."""
    doc = json.loads(raw)
    text, refusal, calls, finish = completion_parts(doc)
    content: list[dict[str, Any]] = []
    if text or refusal:
        content.append({"type": "text", "text": text + (refusal or "")})
    for call in calls:
        content.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": call["name"],
                "input": tool_input(call["arguments"]),
            }
        )
    prompt, completion, _, _ = usage_counts(doc)
    body = {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": str(doc.get("model") or ""),
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": None,
        "usage": _usage(prompt, completion),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class MessagesStream:
    """Translates one stream; feed it the upstream's events in order."""

    def __init__(self, request_id: str, model: str) -> None:
        self._id = request_id
        self._model = model
        self._blocks = 0  # blocks started so far (the next one's index)
        self._open: str | None = None  # "text" or "tool" while a block is open
        self._tools: dict[int, int] = {}  # chat tool-call index -> block index
        self._finish: str | None = None

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": f"msg_{self._id}",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(0, 0),
        }
        return _event("message_start", message=message)

    def feed(self, events: bytes) -> bytes:
        out: list[bytes] = []
        for delta in deltas(events):
            if delta.kind == "finish":
                self._finish = delta.text
            elif delta.kind == "tool":
                block = self._tools.get(delta.index)
                if block is None:
                    self._close(out)
                    block = self._tools[delta.index] = self._begin("tool", out, delta)
                if delta.text:
                    out.append(
                        _event(
                            "content_block_delta",
                            index=block,
                            delta={"type": "input_json_delta", "partial_json": delta.text},
                        )
                    )
            else:
                if self._open != "text":
                    self._close(out)
                    self._begin("text", out)
                out.append(
                    _event(
                        "content_block_delta",
                        index=self._blocks - 1,
                        delta={"type": "text_delta", "text": delta.text},
                    )
                )
        return b"".join(out)

    def finish(self, usage: tuple[int, int] | None) -> bytes:
        out: list[bytes] = []
        self._close(out)
        prompt, completion = usage or (0, 0)
        out.append(
            _event(
                "message_delta",
                delta={"stop_reason": stop_reason(self._finish), "stop_sequence": None},
                usage=_usage(prompt, completion),
            )
        )
        out.append(_event("message_stop"))
        return b"".join(out)

    def failed(self, error: Mapping[str, Any]) -> bytes:
        return _event("error", **error)

    def _begin(self, kind: str, out: list[bytes], delta: Any = None) -> int:
        index = self._blocks
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": ""}
        else:
            block = {
                "type": "tool_use",
                "id": delta.call_id or f"toolu_{self._id}_{index}",
                "name": delta.name or "",
                "input": {},
            }
        out.append(_event("content_block_start", index=index, content_block=block))
        self._blocks += 1
        self._open = kind
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(_event("content_block_stop", index=self._blocks - 1))
            self._open = None


def _event(kind: str, **fields: Any) -> bytes:
    data = json.dumps({"type": kind, **fields}, ensure_ascii=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()
