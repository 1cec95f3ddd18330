"""The fake DashScope upstream speaks compatible mode, with its thinking and VLM quirks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from aegis.sidecar.fakes import FakeUpstream

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Who are you?"}]
IMAGE_MESSAGES: list[ChatCompletionMessageParam] = [
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "text", "text": "Describe this picture"},
        ],
    }
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream.start(kind="dashscope") as upstream:
        yield upstream


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-ds", max_retries=0)
    yield sdk
    await sdk.close()


async def test_base_url_is_compatible_mode(client: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    assert fake.base_url.endswith("/compatible-mode/v1")
    answer = await client.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert answer.usage is not None and answer.usage.prompt_tokens == 4 + 3
    assert fake.requests[-1]["path"] == "/compatible-mode/v1/chat/completions"


async def test_hybrid_thinking_requires_stream(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="qwen-plus", messages=MESSAGES, extra_body={"enable_thinking": True}
        )
    assert refused.value.code == "invalid_parameter_error"
    assert "enable_thinking must be set to false for non-streaming calls" in refused.value.message
    # Open-source Qwen3 models think by default, so a bare non-stream call is refused.
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="qwen3-8b", messages=MESSAGES)
    ok = await client.chat.completions.create(
        model="qwen3-8b", messages=MESSAGES, extra_body={"enable_thinking": False}
    )
    assert ok.choices[0].message.content


async def test_thinking_stream_has_reasoning_content(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="qwen-plus",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"enable_thinking": True},
    )
    reasoning, content = "", ""
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning += getattr(choice.delta, "reasoning_content", None) or ""
            content += choice.delta.content or ""
    assert reasoning == "Thinking about the request step by step."
    assert "qwen-plus" in content
    assert usage is not None
    assert usage.completion_tokens == len(content.split()) + 7


async def test_thinking_only_model_refuses_disabling(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="qwen3-vl-30b-a3b-thinking", messages=IMAGE_MESSAGES
    )
    assert answer.choices[0].message.model_extra is not None
    assert answer.choices[0].message.model_extra["reasoning_content"]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="qwen3-vl-30b-a3b-thinking",
            messages=IMAGE_MESSAGES,
            extra_body={"enable_thinking": False},
        )
    assert "restricted to True" in refused.value.message
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="qwq-plus", messages=MESSAGES)


async def test_forbidden_vlm_answers_403_in_dashscope_shape(fake: FakeUpstream) -> None:
    fake.knobs.forbidden_models = ["qwen3-vl-30b-a3b-instruct"]
    body = {"model": "qwen3-vl-30b-a3b-instruct", "messages": IMAGE_MESSAGES}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake.base_url + "/chat/completions", json=body, headers={"Authorization": "Bearer k"}
        ) as resp,
    ):
        assert resp.status == 403
        doc = await resp.json()
    assert set(doc) == {"error", "id", "request_id"}
    assert doc["id"] == "chatcmpl-" + doc["request_id"]
    assert set(doc["error"]) == {"code", "param", "message", "type"}
    assert doc["error"]["code"] == "AccessDenied"


async def test_high_resolution_flag_raises_image_tokens(
    client: openai.AsyncOpenAI, fake: FakeUpstream
) -> None:
    low = await client.chat.completions.create(
        model="qwen3-vl-30b-a3b-instruct", messages=IMAGE_MESSAGES
    )
    high = await client.chat.completions.create(
        model="qwen3-vl-30b-a3b-instruct",
        messages=IMAGE_MESSAGES,
        extra_body={"vl_high_resolution_images": True},
    )
    assert low.usage is not None and high.usage is not None
    assert low.usage.prompt_tokens == 4 + 3 + 10
    assert high.usage.prompt_tokens == 4 + 3 + 40
    assert fake.requests[-1]["body"]["vl_high_resolution_images"] is True
    assert fake.requests[-1]["images"] == 1


async def test_auth_and_rate_limit_shapes(fake: FakeUpstream) -> None:
    fake.set_knobs(fail_next=1, fail_status=429, retry_after=2)
    async with aiohttp.ClientSession() as session:
        body = {"model": "qwen-plus", "messages": MESSAGES}
        async with session.post(fake.base_url + "/chat/completions", json=body) as resp:
            assert resp.status == 429
            assert resp.headers["retry-after"] == "2"
            assert (await resp.json())["error"]["code"] == "limit_requests"
        async with session.post(fake.base_url + "/chat/completions", json=body) as resp:
            assert resp.status == 401
            doc = await resp.json()
            assert doc["error"]["code"] == "invalid_api_key" and "request_id" in doc


async def test_embeddings(client: openai.AsyncOpenAI) -> None:
    result = await client.embeddings.create(model="text-embedding-v4", input="a b c")
    assert result.usage.prompt_tokens == 3 and len(result.data[0].embedding) == 8
