"""Reading a chat-completions stream: the deltas of the first choice, in order.

The adapters hand every stream over as chat-completion chunks (complete SSE
events, ``data: {...}``); the stream translators of the other APIs read them as
a flat sequence of :class:`Delta` values and write their own events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

DeltaKind = Literal["text", "refusal", "tool", "finish"]


@dataclass(frozen=True, slots=True)
class Delta:
    """One step of the answer: a piece of text or refusal, a tool-call fragment
    (``index`` says which call; ``call_id`` and ``name`` come with its first
    fragment), or the finish reason."""

    kind: DeltaKind
    text: str = ""
    index: int = 0
    call_id: str | None = None
    name: str | None = None


def chunk_documents(events: bytes) -> Iterator[Mapping[str, Any]]:
    """The JSON objects of complete SSE events (``[DONE]`` and comments skipped)."""
    for event in events.split(b"\n\n"):
        data = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
        if not data:
            continue
        payload = b"\n".join(data)
        if payload.startswith(b"[DONE]"):
            continue
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict):
            yield doc


def deltas(events: bytes) -> Iterator[Delta]:
    """The deltas of choice 0 in ``events`` (usage-only chunks carry none)."""
    for doc in chunk_documents(events):
        choices = doc.get("choices")
        if not isinstance(choices, list):
            continue
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                yield from _delta(delta)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                yield Delta("finish", finish)


def _delta(delta: Mapping[str, Any]) -> Iterator[Delta]:
    content = delta.get("content")
    if isinstance(content, str) and content:
        yield Delta("text", content)
    refusal = delta.get("refusal")
    if isinstance(refusal, str) and refusal:
        yield Delta("refusal", refusal)
    calls = delta.get("tool_calls")
    if not isinstance(calls, list):
        return
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        index = call.get("index", position)
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        call_id, name = call.get("id"), function.get("name")
        arguments = function.get("arguments")
        yield Delta(
            "tool",
            arguments if isinstance(arguments, str) else "",
            index if isinstance(index, int) else position,
            call_id if isinstance(call_id, str) and call_id else None,
            name if isinstance(name, str) and name else None,
        )


def completion_parts(doc: Mapping[str, Any]) -> tuple[str, str | None, list[dict[str, str]], str]:
    """(text, refusal, tool calls as ``{id, name, arguments}``, finish reason) of
    choice 0 of a whole chat completion."""
    choices = doc.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    refusal = message.get("refusal")
    calls: list[dict[str, str]] = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        calls.append(
            {
                "id": str(call.get("id") or f"call_{len(calls)}"),
                "name": str(function.get("name") or ""),
                "arguments": str(function.get("arguments") or ""),
            }
        )
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    return (
        content if isinstance(content, str) else "",
        refusal if isinstance(refusal, str) and refusal else None,
        calls,
        finish if isinstance(finish, str) else "stop",
    )


def usage_counts(doc: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(prompt, completion, cached prompt, reasoning) tokens of a completion's usage."""
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        return 0, 0, 0, 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    out_details = usage.get("completion_tokens_details")
    reasoning = out_details.get("reasoning_tokens") if isinstance(out_details, dict) else None
    return _count(prompt), _count(completion), _count(cached), _count(reasoning)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
