"""An OpenAI Responses request as the internal chat-completions body.

The sidecar keeps no state (``store`` is accepted and has no effect), so a
request must carry its whole conversation: ``previous_response_id``,
``conversation``, ``item_reference`` inputs and stored prompts are refused with a
400 that says so. Only function tools exist; hosted tools (web search, file
search, computer use, ...) are refused rather than silently dropped.

Mapping: ``instructions`` becomes the first system message, ``developer``
messages become system messages (not every upstream knows the role), input
items become chat messages (consecutive ``function_call`` items one assistant
message with ``tool_calls``, each ``function_call_output`` a ``tool`` message),
``input_text``/``input_image`` become ``text``/``image_url`` parts,
``max_output_tokens`` the completion cap, ``text.format`` the ``response_format``
and ``reasoning.effort`` ``reasoning_effort``. Reasoning items a client passes
back are dropped (an upstream reached through chat completions cannot read them).
"""

from __future__ import annotations

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
    optional_str,
    put,
    unknown_keys,
    unsupported,
)

_KNOWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "text",
        "stream",
        "store",
        "previous_response_id",
        "conversation",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "metadata",
        "user",
        "safety_identifier",
        "reasoning",
        "include",
        "truncation",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "stream_options",
        "background",
        "prompt",
        "max_tool_calls",
        "top_logprobs",
    }
)
_STATELESS = (
    "the Aegis sidecar keeps no conversation state (store: false); "
    "send the whole conversation in 'input'"
)
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def responses_to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the internal chat body, the request fields a Response object repeats)."""
    unknown_keys(body, _KNOWN)
    for key in ("previous_response_id", "conversation", "prompt"):
        if body.get(key) is not None:
            raise unsupported(key, _STATELESS)
    if body.get("background") is True:
        raise unsupported("background", "background responses need server-side state")
    chat: dict[str, Any] = {}
    model = body.get("model")
    chat["model"] = "" if model is None else model  # checked with the chat request
    messages: list[dict[str, Any]] = []
    instructions = optional_str(body, "instructions", "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if "input" not in body:
        raise missing("input")
    messages += _input(body["input"])
    if not messages:
        raise invalid("input", "at least one message", code="empty_array")
    chat["messages"] = messages
    if optional_bool(body, "stream", "stream"):
        chat["stream"] = True
    optional_bool(body, "store", "store")
    put(
        chat,
        "max_completion_tokens",
        optional_int(body, "max_output_tokens", "max_output_tokens", minimum=1),
    )
    put(chat, "temperature", optional_number(body, "temperature", "temperature"))
    put(chat, "top_p", optional_number(body, "top_p", "top_p"))
    user = optional_str(body, "safety_identifier", "safety_identifier")
    put(chat, "user", user or optional_str(body, "user", "user"))
    tools = _tools(body.get("tools"))
    choice = body.get("tool_choice")
    chat_choice = None
    if choice is not None:
        tools, chat_choice = _tool_choice(choice, tools)
    if tools:  # chat completions refuse a tool choice without tools
        chat["tools"] = tools
        put(chat, "tool_choice", chat_choice)
        put(
            chat,
            "parallel_tool_calls",
            optional_bool(body, "parallel_tool_calls", "parallel_tool_calls"),
        )
    text = body.get("text")
    if text is not None:
        put(chat, "response_format", _format(as_dict(text, "text").get("format")))
    reasoning = body.get("reasoning")
    if reasoning is not None:
        put(
            chat,
            "reasoning_effort",
            optional_str(as_dict(reasoning, "reasoning"), "effort", "reasoning.effort"),
        )
    metadata = body.get("metadata")
    if metadata is not None:
        as_dict(metadata, "metadata")  # echoed in the answer, never sent upstream
    return chat, _echo(body)


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    text = body.get("text")
    text = text if isinstance(text, dict) else {}
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
    }


# ---------------------------------------------------------------- input


def _input(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    items = as_list(value, "input")
    messages: list[dict[str, Any]] = []
    for i, raw in enumerate(items):
        where = f"input[{i}]"
        item = as_dict(raw, where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "id": as_str(item.get("call_id"), f"{where}.call_id", empty=False),
                "type": "function",
                "function": {
                    "name": as_str(item.get("name"), f"{where}.name", empty=False),
                    "arguments": as_str(item.get("arguments"), f"{where}.arguments"),
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last["role"] == "assistant":
                last["tool_calls"] = [call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": as_str(item.get("call_id"), f"{where}.call_id", empty=False),
                    "content": _output_text(item.get("output"), f"{where}.output"),
                }
            )
        elif kind == "reasoning":
            continue
        elif kind == "item_reference":
            raise unsupported(where, _STATELESS)
        elif isinstance(kind, str):
            raise unsupported(f"{where}.type", f"input items of type {kind[:40]!r}")
        else:
            raise invalid(where, "an input item with a 'type' or a 'role'")
    return messages


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise invalid(f"{where}.role", "one of 'user', 'assistant', 'system', 'developer'")
    chat_role = _ROLES[role]
    content = item.get("content")
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    parts = as_list(content, f"{where}.content")
    if chat_role == "user":
        return {
            "role": "user",
            "content": [_user_part(p, f"{where}.content[{j}]") for j, p in enumerate(parts)],
        }
    # System and assistant turns are text: joined, since not every upstream takes parts.
    texts = [
        _text_of(p, f"{where}.content[{j}]", assistant=chat_role == "assistant")
        for j, p in enumerate(parts)
    ]
    return {"role": chat_role, "content": "".join(texts)}


def _user_part(raw: Any, where: str) -> dict[str, Any]:
    part = as_dict(raw, where)
    kind = part.get("type")
    if kind == "input_text":
        return {"type": "text", "text": as_str(part.get("text"), f"{where}.text")}
    if kind == "input_image":
        url = part.get("image_url")
        if url is None and part.get("file_id") is not None:
            raise unsupported(
                f"{where}.file_id", "file ids need the OpenAI Files API; send image_url"
            )
        image: dict[str, Any] = {"url": as_str(url, f"{where}.image_url", empty=False)}
        detail = optional_str(part, "detail", f"{where}.detail")
        put(image, "detail", detail)
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        raise unsupported(f"{where}.type", "file inputs cannot be inspected for sensitive data")
    raise invalid(f"{where}.type", "'input_text' or 'input_image'", code="invalid_value")


def _text_of(raw: Any, where: str, *, assistant: bool) -> str:
    part = as_dict(raw, where)
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        return as_str(part.get("text"), f"{where}.text")
    if kind == "refusal" and assistant:
        return as_str(part.get("refusal"), f"{where}.refusal")
    expected = "'output_text' or 'refusal'" if assistant else "'input_text'"
    raise invalid(f"{where}.type", expected, code="invalid_value")


def _output_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    parts = as_list(value, where)
    return "".join(_text_of(p, f"{where}[{j}]", assistant=False) for j, p in enumerate(parts))


# ---------------------------------------------------------------- tools and format


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    out = []
    for i, raw in enumerate(as_list(value, "tools")):
        where = f"tools[{i}]"
        tool = as_dict(raw, where)
        kind = tool.get("type")
        if kind != "function":
            raise unsupported(
                f"{where}.type", f"tool type {str(kind)[:40]!r}; only function tools are served"
            )
        function: dict[str, Any] = {"name": as_str(tool.get("name"), f"{where}.name", empty=False)}
        put(function, "description", optional_str(tool, "description", f"{where}.description"))
        parameters = tool.get("parameters")
        put(
            function,
            "parameters",
            None if parameters is None else as_dict(parameters, f"{where}.parameters"),
        )
        put(function, "strict", optional_bool(tool, "strict", f"{where}.strict"))
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(value: Any, tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
    if value in ("none", "auto", "required"):
        return tools, value
    choice = as_dict(value, "tool_choice")
    kind = choice.get("type")
    if kind == "function":
        name = as_str(choice.get("name"), "tool_choice.name", empty=False)
        return tools, {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools":
        mode = choice.get("mode")
        if mode not in ("auto", "required"):
            raise invalid("tool_choice.mode", "'auto' or 'required'", code="invalid_value")
        allowed = set()
        for j, raw in enumerate(as_list(choice.get("tools"), "tool_choice.tools")):
            entry = as_dict(raw, f"tool_choice.tools[{j}]")
            allowed.add(as_str(entry.get("name"), f"tool_choice.tools[{j}].name", empty=False))
        return [t for t in tools if t["function"]["name"] in allowed], mode
    raise unsupported(
        "tool_choice.type", f"tool choice {str(kind)[:40]!r}; only function tools are served"
    )


def _format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    fmt = as_dict(value, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema: dict[str, Any] = {
            "name": as_str(fmt.get("name"), "text.format.name", empty=False),
            "schema": as_dict(fmt.get("schema"), "text.format.schema"),
        }
        put(schema, "description", optional_str(fmt, "description", "text.format.description"))
        put(schema, "strict", optional_bool(fmt, "strict", "text.format.strict"))
        return {"type": "json_schema", "json_schema": schema}
    raise invalid(
        "text.format.type", "'text', 'json_object' or 'json_schema'", code="invalid_value"
    )
