"""Request bodies of the three APIs with a sensitive value placed in one field.

Each front end is a table of *placements*: a field name and a function that puts
the value (or, for the split placements, its two halves) into a valid body.
The leak test draws from these tables; a new front end is a new table.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

Place = Callable[[str], dict[str, Any]]
Split = Callable[[str, str], dict[str, Any]]

# Canonical values (public test data) and the separators of each kind's groups.
VALUES: dict[str, str] = {
    "email": "john.doe@example.com",
    "phone": "+44 20 7946 0958",
    "iban": "DE89 3704 0044 0532 0130 00",
    "card": "4111 1111 1111 1111",
    "us_ssn": "123-45-6789",
}
_FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}
_ARABIC_INDIC = {ord(str(d)): 0x0660 + d for d in range(10)}
_SPELLED = {"email": "john dot doe at example dot com"}
_BRACKETED = {"email": "john.doe (at) example [dot] com"}


def obfuscations(kind: str) -> list[str]:
    names = ["plain", "fullwidth", "zero_width", "mixed_separators"]
    if kind == "email":
        names += ["spelled", "bracketed"]
    else:
        names.append("other_digits")
    return names


def obfuscate(kind: str, how: str, rng: random.Random) -> str:
    value = VALUES[kind]
    if how == "plain":
        return value
    if how == "fullwidth":
        return value.translate(_FULLWIDTH)
    if how == "zero_width":
        chars = list(value)
        for _ in range(3):
            chars.insert(rng.randrange(1, len(chars)), rng.choice("\u200b\u200c\u2060\ufeff"))
        return "".join(chars)
    if how == "other_digits":
        return value.translate(_ARABIC_INDIC)
    if how == "spelled":
        return _SPELLED[kind]
    if how == "bracketed":
        return _BRACKETED[kind]
    if kind == "email":  # mixed separators: spaces around the marks
        return "john.doe @ example.com"
    out = []
    for ch in value:
        out.append(rng.choice(" -.") if ch in " -" else ch)
    return "".join(out)


def _tool_schema(description: str = "the query") -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"q": {"type": "string", "description": description}},
        "required": ["q"],
    }


# --------------------------------------------------------------- chat completions


def _chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    base = [{"role": "system", "content": "You are helpful."}]
    return {"model": "auto", "messages": [*base, *messages], **extra}


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _chat_tools(name: str = "lookup", description: str = "Looks up", param: str = "q") -> Any:
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": _tool_schema(param),
            },
        }
    ]


def _chat_tool_exchange(arguments: str, result: str) -> list[dict[str, Any]]:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return [
        _user("look it up"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]


CHAT: dict[str, Place] = {
    "messages[].content": lambda v: _chat(_user(f"please write to {v} today")),
    "messages[].content[].text": lambda v: _chat(
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": v}]}
    ),
    "system message": lambda v: {
        "model": "auto",
        "messages": [{"role": "system", "content": f"Owner: {v}"}, _user("hi")],
    },
    "messages[].name": lambda v: _chat({"role": "user", "content": "hi", "name": v}),
    "user": lambda v: _chat(_user("hi"), user=v),
    "tools[].function.name": lambda v: _chat(_user("hi"), tools=_chat_tools(name=v)),
    "tools[].function.description": lambda v: _chat(_user("hi"), tools=_chat_tools(description=v)),
    "tools[].parameters description": lambda v: _chat(_user("hi"), tools=_chat_tools(param=v)),
    "tool_calls[].arguments": lambda v: _chat(*_chat_tool_exchange(json.dumps({"q": v}), "ok")),
    "tool message content": lambda v: _chat(*_chat_tool_exchange('{"q": "x"}', f"found {v}")),
    "response_format schema": lambda v: _chat(
        _user("hi"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": _tool_schema(f"e.g. {v}")},
        },
    ),
    "metadata value": lambda v: _chat(_user("hi"), metadata={"owner": v}),
    "metadata key": lambda v: _chat(_user("hi"), metadata={v: "owner"}),
}
CHAT_SPLIT: dict[str, Split] = {
    "split over content parts": lambda a, b: _chat(
        {"role": "user", "content": [{"type": "text", "text": a}, {"type": "text", "text": b}]}
    ),
    "split over messages": lambda a, b: _chat(_user(a), _user(b)),
}

# --------------------------------------------------------------- Responses


def _responses(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "input": "hi", **fields}


def _responses_tools(name: str = "lookup", description: str = "Looks up", param: str = "q") -> Any:
    return [
        {
            "type": "function",
            "name": name,
            "description": description,
            "parameters": _tool_schema(param),
        }
    ]


def _function_items(arguments: str, output: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "look it up"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": arguments},
        {"type": "function_call_output", "call_id": "c1", "output": output},
    ]


def _input_text(*texts: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "input_text", "text": t} for t in texts]}]


RESPONSES: dict[str, Place] = {
    "input (string)": lambda v: _responses(input=f"please write to {v}"),
    "input[].content[].input_text": lambda v: _responses(input=_input_text("hi", v)),
    "instructions": lambda v: _responses(instructions=f"Owner: {v}"),
    "tools[].name": lambda v: _responses(tools=_responses_tools(name=v)),
    "tools[].description": lambda v: _responses(tools=_responses_tools(description=v)),
    "tools[].parameters description": lambda v: _responses(tools=_responses_tools(param=v)),
    "function_call.arguments": lambda v: _responses(
        input=_function_items(json.dumps({"q": v}), "ok")
    ),
    "function_call_output.output": lambda v: _responses(
        input=_function_items('{"q": "x"}', f"found {v}")
    ),
    "text.format schema": lambda v: _responses(
        text={"format": {"type": "json_schema", "name": "r", "schema": _tool_schema(v)}}
    ),
    "metadata": lambda v: _responses(metadata={"owner": v}),
    "user": lambda v: _responses(user=v),
}
RESPONSES_SPLIT: dict[str, Split] = {
    "split over input_text parts": lambda a, b: _responses(input=_input_text(a, b)),
}

# --------------------------------------------------------------- Anthropic Messages


def _messages(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    turns = list(messages) or [{"role": "user", "content": "hi"}]
    return {"model": "auto", "max_tokens": 64, "messages": turns, **fields}


def _anthropic_tools(name: str = "lookup", description: str = "Looks up", param: str = "q") -> Any:
    return [{"name": name, "description": description, "input_schema": _tool_schema(param)}]


def _tool_use(value: Any, result: str) -> list[dict[str, Any]]:
    use = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": value}}
    answer = {"type": "tool_result", "tool_use_id": "toolu_1", "content": result}
    return [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [answer]},
    ]


def _blocks(*texts: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": t} for t in texts]}


MESSAGES: dict[str, Place] = {
    "system (string)": lambda v: _messages(system=f"Owner: {v}"),
    "system blocks": lambda v: _messages(system=[{"type": "text", "text": v}]),
    "messages[].content (string)": lambda v: _messages({"role": "user", "content": f"to {v}"}),
    "messages[].content[].text": lambda v: _messages(_blocks("hi", v)),
    "tools[].name": lambda v: _messages(tools=_anthropic_tools(name=v)),
    "tools[].description": lambda v: _messages(tools=_anthropic_tools(description=v)),
    "tools[].input_schema description": lambda v: _messages(tools=_anthropic_tools(param=v)),
    "tool_use.input": lambda v: _messages(*_tool_use(v, "ok")),
    "tool_result.content": lambda v: _messages(*_tool_use("x", f"found {v}")),
    "metadata.user_id": lambda v: _messages(metadata={"user_id": v}),
    "stop_sequences": lambda v: _messages(stop_sequences=[v]),
}
MESSAGES_SPLIT: dict[str, Split] = {
    "split over text blocks": lambda a, b: _messages(_blocks(a, b)),
}

# The front ends: path, single placements, split placements.
FRONT_ENDS: dict[str, tuple[str, dict[str, Place], dict[str, Split]]] = {
    "chat": ("/v1/chat/completions", CHAT, CHAT_SPLIT),
    "responses": ("/v1/responses", RESPONSES, RESPONSES_SPLIT),
    "messages": ("/v1/messages", MESSAGES, MESSAGES_SPLIT),
}
