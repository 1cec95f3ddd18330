"""An Anthropic Messages request as the internal chat-completions body.

Mapping: ``system`` (a string or text blocks) becomes the first system message;
``text`` and ``image`` blocks (base64 or URL sources) become ``text`` and
``image_url`` parts; an assistant's ``tool_use`` blocks its ``tool_calls``; a
user's ``tool_result`` blocks ``tool`` messages placed before the rest of that
turn; ``max_tokens`` the completion cap; ``stop_sequences`` ``stop``;
``tool_choice`` ``auto``/``any``/``tool``/``none`` the chat choices
``auto``/``required``/named/``none`` (``disable_parallel_tool_use``:
``parallel_tool_calls: false``); ``output_config.format`` the
``response_format``. Thinking blocks of earlier turns are dropped, and
``thinking``, ``top_k``, ``metadata``, ``service_tier`` and cache hints are accepted
without effect: an upstream reached through chat completions has no use for
them. Documents, server tools, MCP servers and containers are refused.
"""

from __future__ import annotations

import json
from typing import Any

from .fields import (
    as_dict,
    as_list,
    as_str,
    invalid,
    missing,
    optional_bool,
    optional_int,
    optional_number,
    put,
    string_list,
    unknown_keys,
    unsupported,
)

_KNOWN = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "service_tier",
        "output_config",
        "cache_control",
        "inference_geo",
        "container",
        "mcp_servers",
    }
)
_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The internal chat body of a Messages request."""
    unknown_keys(body, _KNOWN)
    for key in ("container", "mcp_servers"):
        if body.get(key) is not None:
            raise unsupported(key, "server-side containers and MCP servers are not served")
    if "model" not in body:
        raise missing("model")
    chat: dict[str, Any] = {"model": as_str(body["model"], "model")}
    max_tokens = optional_int(body, "max_tokens", "max_tokens", minimum=1)
    if max_tokens is None:
        raise missing("max_tokens")
    messages: list[dict[str, Any]] = []
    system = _system(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    if "messages" not in body:
        raise missing("messages")
    for i, raw in enumerate(as_list(body["messages"], "messages", empty=False)):
        messages += _message(raw, f"messages.{i}")
    chat["messages"] = messages
    chat["max_completion_tokens"] = max_tokens
    if optional_bool(body, "stream", "stream"):
        chat["stream"] = True
    stops = body.get("stop_sequences")
    if stops is not None and string_list(stops, "stop_sequences"):
        chat["stop"] = stops
    put(chat, "temperature", optional_number(body, "temperature", "temperature"))
    put(chat, "top_p", optional_number(body, "top_p", "top_p"))
    optional_int(body, "top_k", "top_k", minimum=0)
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if choice is not None:
        _tool_choice(as_dict(choice, "tool_choice"), chat)
    output = body.get("output_config")
    if output is not None:
        fmt = as_dict(output, "output_config").get("format")
        if fmt is not None:
            fmt = as_dict(fmt, "output_config.format")
            if fmt.get("type") != "json_schema":
                raise invalid("output_config.format.type", "'json_schema'", code="invalid_value")
            schema = as_dict(fmt.get("schema"), "output_config.format.schema")
            chat["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True},
            }
    return chat


def _system(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    texts = []
    for i, raw in enumerate(as_list(value, "system")):
        block = as_dict(raw, f"system.{i}")
        if block.get("type") != "text":
            raise invalid(f"system.{i}.type", "'text'", code="invalid_value")
        texts.append(as_str(block.get("text"), f"system.{i}.text"))
    return "\n\n".join(texts)


def _message(raw: Any, where: str) -> list[dict[str, Any]]:
    message = as_dict(raw, where)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise invalid(f"{where}.role", "'user' or 'assistant'", code="invalid_value")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = as_list(content, f"{where}.content")
    if role == "assistant":
        return [_assistant(blocks, where)]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, raw_block in enumerate(blocks):
        at = f"{where}.content.{j}"
        block = as_dict(raw_block, at)
        kind = block.get("type")
        if kind == "tool_result":
            tool_messages.append(_tool_result(block, at))
        elif kind in _SKIPPED_BLOCKS:
            continue
        else:
            parts.append(_user_part(block, kind, at))
    if parts or not tool_messages:
        return [*tool_messages, {"role": "user", "content": parts}]
    return tool_messages


def _user_part(block: dict[str, Any], kind: Any, where: str) -> dict[str, Any]:
    if kind == "text":
        return {"type": "text", "text": as_str(block.get("text"), f"{where}.text")}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block, where)}}
    if kind == "document":
        raise unsupported(f"{where}.type", "document blocks cannot be inspected for sensitive data")
    raise invalid(f"{where}.type", "'text', 'image' or 'tool_result'", code="invalid_value")


def _image_url(block: dict[str, Any], where: str) -> str:
    source = as_dict(block.get("source"), f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        media = as_str(source.get("media_type"), f"{where}.source.media_type", empty=False)
        data = as_str(source.get("data"), f"{where}.source.data", empty=False)
        return f"data:{media};base64,{data}"
    if kind == "url":
        return as_str(source.get("url"), f"{where}.source.url", empty=False)
    raise invalid(f"{where}.source.type", "'base64' or 'url'", code="invalid_value")


def _assistant(blocks: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, raw in enumerate(blocks):
        at = f"{where}.content.{j}"
        block = as_dict(raw, at)
        kind = block.get("type")
        if kind == "text":
            texts.append(as_str(block.get("text"), f"{at}.text"))
        elif kind == "tool_use":
            arguments = json.dumps(as_dict(block.get("input"), f"{at}.input"), ensure_ascii=False)
            calls.append(
                {
                    "id": as_str(block.get("id"), f"{at}.id", empty=False),
                    "type": "function",
                    "function": {
                        "name": as_str(block.get("name"), f"{at}.name", empty=False),
                        "arguments": arguments,
                    },
                }
            )
        elif kind in _SKIPPED_BLOCKS:
            continue
        else:
            raise invalid(f"{at}.type", "'text' or 'tool_use'", code="invalid_value")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        pieces = []
        for k, raw in enumerate(as_list(content, f"{where}.content")):
            part = as_dict(raw, f"{where}.content.{k}")
            if part.get("type") != "text":
                raise unsupported(
                    f"{where}.content.{k}.type", "only text blocks are served in tool results"
                )
            pieces.append(as_str(part.get("text"), f"{where}.content.{k}.text"))
        text = "".join(pieces)
    if optional_bool(block, "is_error", f"{where}.is_error"):
        text = f"Error: {text}"
    return {
        "role": "tool",
        "tool_call_id": as_str(block.get("tool_use_id"), f"{where}.tool_use_id", empty=False),
        "content": text,
    }


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    out = []
    for i, raw in enumerate(as_list(value, "tools")):
        where = f"tools.{i}"
        tool = as_dict(raw, where)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise unsupported(f"{where}.type", f"server tool {str(kind)[:40]!r}")
        function: dict[str, Any] = {
            "name": as_str(tool.get("name"), f"{where}.name", empty=False),
            "parameters": as_dict(tool.get("input_schema"), f"{where}.input_schema"),
        }
        description = tool.get("description")
        if description is not None:
            function["description"] = as_str(description, f"{where}.description")
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: dict[str, Any], chat: dict[str, Any]) -> None:
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool":
        name = as_str(choice.get("name"), "tool_choice.name", empty=False)
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise invalid("tool_choice.type", "'auto', 'any', 'tool' or 'none'", code="invalid_value")
    no_parallel = optional_bool(
        choice, "disable_parallel_tool_use", "tool_choice.disable_parallel_tool_use"
    )
    if "tools" not in chat:
        chat.pop("tool_choice")  # chat completions refuse a tool choice without tools
    elif no_parallel:
        chat["parallel_tool_calls"] = False
