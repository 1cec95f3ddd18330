"""The Anthropic Messages front end's translations, request and answer (its stream
events included), without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aegis.sidecar.errors import BadRequest
from aegis.sidecar.frontends import Api, answer, stream_translator, translate
from tests.sidecar.frontend_cases import chat_completion, chunk, sse_events

# ---------------------------------------------------------------- Messages


def test_messages_request_becomes_chat() -> None:
    body = {
        "model": "auto",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "stop_sequences": ["END"],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and?"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "cat"}],
                        "is_error": True,
                    },
                ],
            },
        ],
        "tools": [{"name": "look", "description": "eyes", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u1"},
        "top_k": 5,
        "stream": True,
    }
    chat = translate(Api.MESSAGES, body).body
    assert chat == {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "Be brief.\n\nBe kind."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: cat"},
            {"role": "user", "content": [{"type": "text", "text": "and?"}]},
        ],
        "max_completion_tokens": 64,
        "stream": True,
        "stop": ["END"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "look",
                    "parameters": {"type": "object"},
                    "description": "eyes",
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "auto", "max_tokens": 5, "messages": []}, "messages"),
        (
            {"model": "auto", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            "messages.0.role",
        ),
        (
            {
                "model": "auto",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "document"}]}],
            },
            "messages.0.content.0.type",
        ),
        (
            {
                "model": "auto",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "w"}],
            },
            "tools.0.type",
        ),
        (
            {
                "model": "auto",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "mcp_servers": [],
            },
            "mcp_servers",
        ),
    ],
)
def test_messages_bad_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        translate(Api.MESSAGES, body)
    assert info.value.param == param


def test_chat_completion_as_anthropic_message() -> None:
    request = translate(
        Api.MESSAGES,
        {"model": "auto", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]},
    )
    calls = [
        {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    doc = json.loads(
        answer(request, chat_completion("Hello", finish="tool_calls", calls=calls), "abc")
    )
    assert doc == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "m-1",
        "content": [
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "call_9", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 11,
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    cut = json.loads(answer(request, chat_completion("Hel", finish="length"), "abc"))
    assert cut["stop_reason"] == "max_tokens"


def test_messages_stream_event_sequence() -> None:
    request = translate(
        Api.MESSAGES,
        {
            "model": "auto",
            "max_tokens": 9,
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
        },
    )
    translator = stream_translator(request, "r1", "m-1")
    raw = translator.start()
    raw += translator.feed(chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hi"}))
    raw += translator.feed(
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a"'}}
                ]
            }
        )
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]})
        + chunk({}, "tool_calls")
    )
    raw += translator.finish((4, 6))
    events = sse_events(raw)
    assert [kind for kind, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["id"] == "msg_r1"
    assert events[4][1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "call_1", "name": "f", "input": {}},
    }
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": ":1}"}
    assert events[8][1]["delta"]["stop_reason"] == "tool_use"
    assert events[8][1]["usage"]["input_tokens"] == 4
    assert events[8][1]["usage"]["output_tokens"] == 6
    broken = stream_translator(request, "r2", "m").failed(
        {"type": "error", "error": {"type": "api_error", "message": "cut"}}
    )
    assert sse_events(broken) == [
        ("error", {"type": "error", "error": {"type": "api_error", "message": "cut"}})
    ]
