"""The front-end tests' shared pieces: a chat completion answer, stream chunks and
a parser for the server-sent events the translated streams emit."""

from __future__ import annotations

import json
from typing import Any


def chat_completion(
    content: str | None = "Hi there",
    *,
    finish: str = "stop",
    calls: list[dict[str, Any]] | None = None,
) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "m-1",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": 11,
                "completion_tokens": 7,
                "total_tokens": 18,
                "prompt_tokens_details": {"cached_tokens": 3},
            },
        }
    ).encode()


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    doc = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out
