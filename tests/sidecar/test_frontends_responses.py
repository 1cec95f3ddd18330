"""The Responses front end's translations, request and answer (its stream events
included), without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aegis.sidecar.errors import BadRequest
from aegis.sidecar.frontends import Api, answer, stream_translator, translate
from tests.sidecar.frontend_cases import chat_completion, chunk, sse_events

IMAGE = "data:image/png;base64,iVBORw0KGgo="


# ---------------------------------------------------------------- Responses requests


def test_responses_input_items_become_chat_messages() -> None:
    body = {
        "model": "auto",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Answer in English."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this picture?"},
                    {"type": "input_image", "image_url": IMAGE, "detail": "low"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "look", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "zoom", "arguments": '{"x":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "a cat"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "a big cat"}],
            },
        ],
        "max_output_tokens": 50,
        "temperature": 0.3,
        "store": False,
        "include": ["reasoning.encrypted_content"],
    }
    request = translate(Api.RESPONSES, body)
    assert request.original is body
    assert request.body == {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in English."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "look", "arguments": "{}"},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "zoom", "arguments": '{"x":1}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "c2", "content": "a big cat"},
        ],
        "max_completion_tokens": 50,
        "temperature": 0.3,
    }


def test_responses_tools_choice_and_format() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = {
        "input": "Weather?",
        "tools": [
            {"type": "function", "name": "weather", "parameters": schema, "strict": True},
            {"type": "function", "name": "time", "description": "clock", "parameters": None},
        ],
        "tool_choice": {
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "weather"}],
        },
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "w", "schema": schema, "strict": True}},
        "reasoning": {"effort": "low"},
        "stream": True,
    }
    chat = translate(Api.RESPONSES, body).body
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "weather", "parameters": schema, "strict": True},
        }
    ]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": schema, "strict": True},
    }
    assert chat["reasoning_effort"] == "low" and chat["stream"] is True
    named = translate(
        Api.RESPONSES,
        {"input": "x", "tools": body["tools"], "tool_choice": {"type": "function", "name": "time"}},
    ).body
    assert named["tool_choice"] == {"type": "function", "function": {"name": "time"}}
    no_tools = translate(Api.RESPONSES, {"input": "x", "tool_choice": "auto"}).body
    assert "tool_choice" not in no_tools and "tools" not in no_tools


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (
            {"input": "x", "previous_response_id": "resp_1"},
            "previous_response_id",
            "no conversation state",
        ),
        ({"input": "x", "conversation": "conv_1"}, "conversation", "no conversation state"),
        (
            {"input": [{"type": "item_reference", "id": "msg_1"}]},
            "input[0]",
            "no conversation state",
        ),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "only function tools"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
            "cannot be inspected",
        ),
        ({"model": "auto"}, "input", "Missing required parameter"),
        ({"input": 7}, "input", "expected an array"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens", "integer >= 1"),
        ({"input": "x", "frobnicate": 1}, "frobnicate", "Unknown parameter"),
        ({"input": [{"role": "critic", "content": "x"}]}, "input[0].role", "expected one of"),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
            "non-empty string",
        ),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type", "json_schema"),
    ],
)
def test_responses_bad_requests_name_the_field(body: dict[str, Any], param: str, says: str) -> None:
    with pytest.raises(BadRequest) as info:
        translate(Api.RESPONSES, body)
    assert info.value.param == param
    assert says in info.value.message


# ---------------------------------------------------------------- Responses answers


def test_chat_completion_as_response_object() -> None:
    request = translate(
        Api.RESPONSES, {"input": "x", "instructions": "be kind", "metadata": {"k": "v"}}
    )
    calls = [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    doc = json.loads(answer(request, chat_completion("Hello", calls=calls), "abc"))
    assert doc["id"] == "resp_abc" and doc["object"] == "response"
    assert doc["status"] == "completed" and doc["model"] == "m-1"
    assert doc["instructions"] == "be kind" and doc["metadata"] == {"k": "v"}
    assert doc["store"] is False
    message, call = doc["output"]
    assert message["type"] == "message" and message["id"] == "msg_abc"
    assert message["content"][0] == {
        "type": "output_text",
        "text": "Hello",
        "annotations": [],
        "logprobs": [],
    }
    assert call == {
        "type": "function_call",
        "id": "fc_abc_0",
        "call_id": "call_9",
        "name": "f",
        "arguments": "{}",
        "status": "completed",
    }
    assert doc["usage"] == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 18,
    }
    cut = json.loads(answer(request, chat_completion("Hel", finish="length"), "abc"))
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}


def test_responses_stream_event_sequence() -> None:
    request = translate(Api.RESPONSES, {"input": "x", "stream": True})
    translator = stream_translator(request, "r1", "m-1")
    raw = translator.start()
    raw += translator.feed(chunk({"role": "assistant", "content": ""}) + chunk({"content": "He"}))
    raw += translator.feed(chunk({"content": "llo"}))
    raw += translator.feed(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        )
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]})
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]})
        + chunk({}, "tool_calls")
        + b"data: [DONE]\n\n"
    )
    raw += translator.finish((5, 9))
    events = sse_events(raw)
    assert [kind for kind, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [doc["sequence_number"] for _, doc in events] == list(range(len(events)))
    assert all(kind == doc["type"] for kind, doc in events)
    assert events[6][1]["text"] == "Hello"
    assert events[12][1]["arguments"] == '{"a":1}'
    final = events[-1][1]["response"]
    assert final["status"] == "completed"
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["output_tokens"] == 9
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["output"][0]["content"][0]["text"] == "Hello"


def test_responses_stream_failure_ends_with_response_failed() -> None:
    translator = stream_translator(translate(Api.RESPONSES, {"input": "x"}), "r2", "m")
    raw = translator.start() + translator.feed(chunk({"content": "Hi"}))
    raw += translator.failed({"code": "server_error", "message": "cut"})
    events = sse_events(raw)
    assert events[-2][0] == "response.output_item.done"
    assert events[-2][1]["item"]["status"] == "incomplete"
    kind, doc = events[-1]
    assert kind == "response.failed"
    assert doc["response"]["status"] == "failed"
    assert doc["response"]["error"] == {"code": "server_error", "message": "cut"}
