"""The fake OpenAI upstream speaks the OpenAI wire: proven with the real openai SDK."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from aegis.sidecar.fakes import FakeUpstream
from aegis.sidecar.fakes.content import count_prompt

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
]
PROMPT_TOKENS = (4 + 2) + (4 + 6)
TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream.start(kind="openai") as upstream:
        yield upstream


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
    yield sdk
    await sdk.close()


def test_prompt_token_rule() -> None:
    assert count_prompt(MESSAGES) == (PROMPT_TOKENS, 0)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    parts = [{"role": "user", "content": [{"type": "text", "text": "what is it"}, image]}]
    assert count_prompt(parts) == (4 + 3 + 10, 1)
    assert count_prompt(parts, high_res=True) == (4 + 3 + 40, 1)


async def test_chat_non_stream(client: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    answer = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    text = answer.choices[0].message.content or ""
    assert "gpt-4o-mini" in text
    assert answer.object == "chat.completion"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == PROMPT_TOKENS
    assert answer.usage.completion_tokens == len(text.split())
    assert answer.usage.total_tokens == PROMPT_TOKENS + len(text.split())
    entry = fake.requests[-1]
    assert entry["path"] == "/v1/chat/completions"
    assert entry["model"] == "gpt-4o-mini"
    assert entry["headers"]["authorization"] == "Bearer sk-test"
    assert entry["messages"] == 2
    assert "messages" not in entry["body"]
    assert entry["status"] == 200


async def test_max_tokens_truncates(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_completion_tokens=3
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    assert answer.choices[0].message.content == "Hello from gpt-4o"


async def test_stream_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    pieces: list[str] = []
    chunks = [chunk async for chunk in stream]
    for chunk in chunks[:-1]:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.usage is None
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == PROMPT_TOKENS
    assert last.usage.completion_tokens == len("".join(pieces).split())
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_stream_without_usage_has_no_usage_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


async def test_stream_raw_wire(fake: FakeUpstream) -> None:
    body = {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": "Bearer k"},
        ) as resp,
    ):
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = await resp.read()
    events = raw.split(b"\n\n")
    assert events[-1] == b""
    assert events[-2] == b"data: [DONE]"
    assert all(e.startswith(b"data: ") for e in events[:-1])
    usage_chunk = json.loads(events[-3][6:])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert json.loads(events[0][6:])["usage"] is None


async def test_tool_calls(client: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    plain = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS)
    assert plain.choices[0].message.tool_calls is None
    forced = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=TOOLS, tool_choice="required"
    )
    calls = forced.choices[0].message.tool_calls
    assert calls is not None
    call = calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"fake": True}
    assert forced.choices[0].finish_reason == "tool_calls"
    fake.knobs.tool_calls = True
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=TOOLS, stream=True
    )
    name, arguments, finish = "", "", None
    async for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            name += delta.function.name or "" if delta.function else ""
            arguments += delta.function.arguments or "" if delta.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, json.loads(arguments), finish) == ("get_weather", {"fake": True}, "tool_calls")


async def test_embeddings_and_models(client: openai.AsyncOpenAI) -> None:
    result = await client.embeddings.create(
        model="text-embedding-3-small", input=["one two three", "four"]
    )
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 8
    assert result.usage.prompt_tokens == 4
    again = await client.embeddings.create(
        model="text-embedding-3-small", input="one two three", encoding_format="float"
    )
    assert again.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)
    models = [m.id async for m in client.models.list()]
    assert "gpt-4o-mini" in models


async def test_errors_are_typed(client: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake.base_url + "/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}
        ) as resp,
    ):
        assert resp.status == 401
        error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "API key" in error["message"] and error["type"] == "invalid_request_error"
    fake.knobs.api_key = "sk-right"
    with pytest.raises(openai.AuthenticationError) as wrong:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert wrong.value.code == "invalid_api_key"
    fake.knobs.api_key = None
    fake.knobs.missing_models = ["gpt-5"]
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    fake.knobs.forbidden_models = ["o1"]
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model="o1", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream_options={"include_usage": True}
        )
    assert bad.value.param == "stream_options"
    fake.knobs.fail_next, fake.knobs.fail_status = 1, 500
    with pytest.raises(openai.InternalServerError) as server:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    body = server.value.body
    assert isinstance(body, dict) and body["type"] == "server_error"
    assert set(body) == {"message", "type", "param", "code"}


async def test_rate_limit_carries_retry_after(fake: FakeUpstream) -> None:
    fake.set_knobs(fail_next=1, fail_status=429, retry_after=0.2)
    sdk = openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError) as limited:
        await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert limited.value.response.headers["retry-after"] == "0.2"
    assert limited.value.code == "rate_limit_exceeded"
    fake.set_knobs(fail_next=1, fail_status=429, retry_after=0.2)
    retrying = openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=1)
    started = time.monotonic()
    answer = await retrying.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert answer.choices[0].message.content
    assert time.monotonic() - started >= 0.2
    await sdk.close()
    await retrying.close()


async def test_cut_stream_fails_the_client(client: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    fake.knobs.cut_after_chunks = 3
    stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert len(received) == 3


async def test_latency_and_error_rate(client: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    fake.knobs.latency_ms = 150
    started = time.monotonic()
    await client.models.list()
    assert time.monotonic() - started >= 0.15
    fake.knobs.latency_ms = 0

    async def outcomes() -> list[bool]:
        results = []
        for _ in range(20):
            try:
                await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
                results.append(True)
            except openai.InternalServerError:
                results.append(False)
        return results

    fake.set_knobs(error_rate=0.5, seed=7)
    first = await outcomes()
    fake.reset()
    fake.set_knobs(error_rate=0.5, seed=7)
    assert await outcomes() == first
    assert 0 < first.count(False) < 20


async def test_omit_usage(client: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    fake.knobs.omit_usage = True
    answer = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert answer.usage is None
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert all(chunk.usage is None for chunk in [c async for c in stream])


async def test_control_endpoints(fake: FakeUpstream) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(fake.root_url + "/_fake/knobs", json={"fail_next": 2}) as resp:
            assert resp.status == 200
            assert (await resp.json())["knobs"]["fail_next"] == 2
        async with session.post(fake.root_url + "/_fake/knobs", json={"nope": 1}) as resp:
            assert resp.status == 400
        async with session.post(fake.root_url + "/_fake/knobs", json={"fail_next": "x"}) as resp:
            assert resp.status == 400
        assert fake.knobs.fail_next == 2
        headers = {"Authorization": "Bearer k", "X-Trace": "t1"}
        async with session.get(fake.base_url + "/models", headers=headers) as resp:
            assert resp.status == 500
        async with session.get(fake.root_url + "/_fake/requests") as resp:
            log = (await resp.json())["requests"]
        assert log[-1]["path"] == "/v1/models" and log[-1]["headers"]["x-trace"] == "t1"
        async with session.post(fake.root_url + "/_fake/reset") as resp:
            assert resp.status == 200
    assert fake.knobs.fail_next == 0 and fake.requests == []


async def test_cli_runs_as_a_process() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aegis.sidecar.fakes",
        "--kind",
        "openai",
        "--port",
        "0",
        "--knobs",
        '{"reply": "pong"}',
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        base_url = line.decode().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        sdk = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0)
        answer = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert answer.choices[0].message.content == "pong"
        await sdk.close()
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
