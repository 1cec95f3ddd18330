"""The fake Anthropic upstream speaks the Messages API: proven with the real anthropic SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anthropic
import pytest
from anthropic.types import MessageParam, ToolParam

from aegis.sidecar.fakes import FakeUpstream
from aegis.sidecar.fakes.content import TOOL_CALL_TOKENS

MESSAGES: list[MessageParam] = [{"role": "user", "content": "What is the capital of France?"}]
SYSTEM = "Be brief."
PROMPT_TOKENS = (4 + 2) + (4 + 6)  # the system prompt counts as a message
TOOLS: list[ToolParam] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream.start(kind="anthropic") as upstream:
        yield upstream


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(base_url=fake.root_url, api_key="sk-ant-test", max_retries=0)
    yield sdk
    await sdk.close()


async def test_message_usage_and_headers(
    fake: FakeUpstream, client: anthropic.AsyncAnthropic
) -> None:
    message = await client.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, system=SYSTEM, messages=MESSAGES
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-sonnet-4-5"
    [block] = message.content
    assert block.type == "text"
    assert block.text == (
        f"Hello from claude-sonnet-4-5 on the fake anthropic upstream: "
        f"{PROMPT_TOKENS} prompt tokens received."
    )
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == PROMPT_TOKENS
    assert message.usage.output_tokens == len(block.text.split())
    sent = fake.requests[-1]
    assert sent["path"] == "/v1/messages" and sent["messages"] == 1
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "system" not in sent["body"]  # prompt text is never logged


async def test_cap_and_stop_sequences(client: anthropic.AsyncAnthropic) -> None:
    capped = await client.messages.create(model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES)
    assert capped.stop_reason == "max_tokens" and capped.usage.output_tokens == 3
    stopped = await client.messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES, stop_sequences=["fake"]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "fake"
    [block] = stopped.content
    assert block.type == "text" and block.text.endswith("on the")


async def test_stream_event_order(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta" and "content_block_start" in kinds
    assert final.usage.input_tokens == 4 + 6
    [block] = final.content
    assert block.type == "text" and final.usage.output_tokens == len(block.text.split())


async def test_tool_use_whole_and_streamed(
    fake: FakeUpstream, client: anthropic.AsyncAnthropic
) -> None:
    message = await client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice={"type": "any"},
    )
    [call] = message.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"fake": True}
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == TOOL_CALL_TOKENS
    fake.set_knobs(tool_calls=True)
    async with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES, tools=TOOLS
    ) as stream:
        final = await stream.get_final_message()
    [streamed] = final.content
    assert streamed.type == "tool_use" and streamed.input == {"fake": True}


async def test_errors_in_anthropic_shape(
    fake: FakeUpstream, client: anthropic.AsyncAnthropic
) -> None:
    fake.set_knobs(fail_next=1, fail_status=529)
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        await client.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=MESSAGES)
    assert overloaded.value.status_code == 529
    body = overloaded.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert str(body["request_id"]).startswith("req_")
    fake.set_knobs(missing_models=["claude-nope"])
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(model="claude-nope", max_tokens=5, messages=MESSAGES)
    wrong_key = anthropic.AsyncAnthropic(base_url=fake.root_url, api_key="x", max_retries=0)
    fake.set_knobs(api_key="sk-ant-test")
    with pytest.raises(anthropic.AuthenticationError):
        await wrong_key.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=MESSAGES)
    await wrong_key.close()
    async with aiohttp.ClientSession() as http:
        headers = {"x-api-key": "sk-ant-test"}
        body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": MESSAGES}
        async with http.post(fake.base_url + "/messages", json=body, headers=headers) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert error == {
                "type": "invalid_request_error",
                "message": "anthropic-version: header is required",
            }


async def test_models_list(client: anthropic.AsyncAnthropic) -> None:
    ids = [model.id async for model in client.models.list()]
    assert ids == ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
