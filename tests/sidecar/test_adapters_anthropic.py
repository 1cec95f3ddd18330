"""The Anthropic adapter against the fake Messages API over real loopback HTTP: chat in,
Anthropic on the wire, chat out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aegis.sidecar.adapters import ErrorKind, UpstreamCall, UpstreamError
from aegis.sidecar.adapters.anthropic import AnthropicAdapter
from aegis.sidecar.adapters.openai_wire import SharedSession
from aegis.sidecar.contract import ProviderSpec, decode
from aegis.sidecar.fakes import FakeUpstream
from aegis.sidecar.fakes.content import TOOL_ARGUMENTS, TOOL_CALL_TOKENS

ENV = {"ANT_KEY": "sk-ant-env"}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": SCHEMA,
        },
    }
]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "and this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    },
]


@pytest.fixture
async def session() -> AsyncIterator[SharedSession]:
    shared = SharedSession()
    yield shared
    await shared.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream.start(kind="anthropic", api_key="sk-ant-env") as upstream:
        yield upstream


def adapter_for(fake: FakeUpstream, session: SharedSession, **extra: Any) -> AnthropicAdapter:
    spec = decode(
        ProviderSpec,
        {
            "name": "claude",
            "type": "anthropic",
            "baseURL": fake.root_url,  # without /v1: the adapter adds it
            "models": {"default": "claude-sonnet-4-5"},
            "apiKeyEnv": "ANT_KEY",
            **extra,
        },
    )
    return AnthropicAdapter(spec, session, env=ENV)


async def test_chat_in_messages_on_the_wire_chat_out(
    fake: FakeUpstream, session: SharedSession
) -> None:
    adapter = adapter_for(fake, session, defaultMaxTokens=321)
    body = {
        "model": "auto",
        "messages": CONVERSATION,
        "temperature": 1.5,
        "stop": "END",
        "user": "u-1",
    }
    result = await adapter.chat(UpstreamCall(body=body, models=["claude-sonnet-4-5"]))
    doc = json.loads(result.body)
    assert doc["object"] == "chat.completion"
    [choice] = doc["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"].startswith("Hello from claude-sonnet-4-5")
    # system (4 + 2), user (4 + 3), the tool-use turn and the tool result + picture
    # turn (4 each, the text "and this picture?" 3 more), one image (10)
    assert result.usage is not None
    assert result.usage.prompt_tokens == doc["usage"]["prompt_tokens"] == 6 + 7 + 4 + 7 + 10
    assert result.usage.completion_tokens == len(choice["message"]["content"].split())
    sent = fake.requests[-1]
    assert sent["path"] == "/v1/messages" and sent["status"] == 200
    assert sent["headers"]["x-api-key"] == "sk-ant-env"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["messages"] == 3 and sent["images"] == 1  # user / assistant / user turns
    assert sent["body"]["max_tokens"] == 321  # no cap in the body: the provider default
    assert sent["body"]["temperature"] == 1.0 and sent["body"]["stop_sequences"] == ["END"]
    assert "user" not in sent["body"] and "metadata" not in sent["body"]


async def test_tool_calls_and_the_client_cap(fake: FakeUpstream, session: SharedSession) -> None:
    adapter = adapter_for(fake, session)
    body = {
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_completion_tokens": 40,
    }
    result = await adapter.chat(
        UpstreamCall(body=body, models=["claude-sonnet-4-5"], max_tokens=99)
    )
    [choice] = json.loads(result.body)["choices"]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {
        "name": "get_weather",
        "arguments": json.dumps(json.loads(TOOL_ARGUMENTS)),
    }
    assert result.usage is not None and result.usage.completion_tokens == TOOL_CALL_TOKENS
    sent = fake.requests[-1]["body"]
    assert sent["max_tokens"] == 40
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": SCHEMA,
        }
    ]


async def test_stream_is_retold_as_chat_chunks(fake: FakeUpstream, session: SharedSession) -> None:
    adapter = adapter_for(fake, session)
    body = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 50}
    call = UpstreamCall(body=body, models=["claude-haiku-4-5"])
    handle = adapter.chat_stream(call)
    await handle.start()
    raw = b"".join([data async for data in handle])
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    docs = [json.loads(e[6:]) for e in events[:-1]]
    assert all(d["object"] == "chat.completion.chunk" for d in docs)
    assert docs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(d["choices"][0]["delta"].get("content") or "" for d in docs)
    assert text.startswith("Hello from claude-haiku-4-5 on the fake anthropic upstream")
    assert docs[-1]["choices"][0]["finish_reason"] == "stop"
    assert handle.usage is not None
    assert (handle.usage.prompt_tokens, handle.usage.completion_tokens) == (
        4 + 2,
        len(text.split()),
    )
    assert all("usage" not in d for d in docs)  # the client did not ask for the usage chunk
    fake.set_knobs(tool_calls=True)
    with_usage = {**body, "tools": TOOLS, "stream_options": {"include_usage": True}}
    handle = adapter.chat_stream(UpstreamCall(body=with_usage, models=["claude-haiku-4-5"]))
    await handle.start()
    raw = b"".join([data async for data in handle])
    docs = [json.loads(e[6:]) for e in raw.split(b"\n\n") if e and e != b"data: [DONE]"]
    deltas = [d["choices"][0]["delta"] for d in docs if d["choices"]]
    calls = [c for delta in deltas for c in delta.get("tool_calls") or []]
    assert calls[0]["id"].startswith("toolu_") and calls[0]["function"]["name"] == "get_weather"
    assert "".join(c["function"]["arguments"] for c in calls) == TOOL_ARGUMENTS
    assert docs[-1]["choices"] == [] and docs[-1]["usage"]["completion_tokens"] == TOOL_CALL_TOKENS


async def test_errors_map_to_upstream_errors(fake: FakeUpstream, session: SharedSession) -> None:
    adapter = adapter_for(fake, session)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    fake.set_knobs(fail_next=1, fail_status=529)
    with pytest.raises(UpstreamError) as overloaded:
        await adapter.chat(UpstreamCall(body=body, models=["claude-sonnet-4-5"]))
    assert overloaded.value.status == 529 and overloaded.value.retriable
    assert overloaded.value.code == "overloaded_error"
    fake.set_knobs(missing_models=["claude-gone"])
    result = await adapter.chat(UpstreamCall(body=body, models=["claude-gone", "claude-haiku-4-5"]))
    assert result.model == "claude-haiku-4-5"  # 404 moves on to the next model
    with pytest.raises(UpstreamError) as many:
        await adapter.chat(UpstreamCall(body={**body, "n": 2}, models=["claude-sonnet-4-5"]))
    assert many.value.client_fault and "n > 1" in many.value.message
    with pytest.raises(UpstreamError) as embed:
        await adapter.embeddings(UpstreamCall(body={"input": "x"}, models=["claude-sonnet-4-5"]))
    assert embed.value.kind is ErrorKind.CONFIG and not embed.value.retriable
    fake.set_knobs(cut_after_chunks=4)
    handle = adapter.chat_stream(UpstreamCall(body=body, models=["claude-sonnet-4-5"]))
    await handle.start()
    with pytest.raises(UpstreamError) as cut:
        async for _ in handle:
            pass
    assert cut.value.partial and not cut.value.retriable


def test_embedding_models_are_refused_in_config() -> None:
    with pytest.raises(ValueError, match="no embeddings API"):
        decode(
            ProviderSpec,
            {
                "name": "c",
                "type": "anthropic",
                "models": {"default": "claude-haiku-4-5", "embedding": "e"},
            },
        )
    spec = decode(ProviderSpec, {"name": "c", "type": "anthropic", "models": {"default": "m"}})
    assert spec.resolved_base_url == "https://api.anthropic.com/v1" and not spec.is_local
