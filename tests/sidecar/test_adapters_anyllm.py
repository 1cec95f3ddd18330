"""The any-llm adapter, driven through any-llm's ``openai`` provider at the fake upstream."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from aegis.sidecar.adapters import ErrorKind, UpstreamCall, UpstreamError
from aegis.sidecar.adapters.anyllm import AnyLLMAdapter, AnyLLMClients, map_error
from aegis.sidecar.contract import ProviderSpec, decode
from aegis.sidecar.fakes import FakeUpstream

MESSAGES = [{"role": "user", "content": "hello there"}]
ENV = {"ANY_KEY": "sk-any"}


def make_spec(base_url: str, **extra: Any) -> ProviderSpec:
    return decode(
        ProviderSpec,
        {
            "name": "sdk",
            "type": "any-llm",
            "sdkProvider": "openai",
            "baseURL": base_url,
            "models": {"default": "gpt-4o"},
            "apiKeyEnv": "ANY_KEY",
            **extra,
        },
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream.start(kind="openai") as upstream:
        yield upstream


@pytest.fixture
async def pool() -> AsyncIterator[AnyLLMClients]:
    clients = AnyLLMClients()
    yield clients
    await clients.aclose()


async def test_chat_and_stream(fake: FakeUpstream, pool: AnyLLMClients) -> None:
    adapter = AnyLLMAdapter(make_spec(fake.base_url), pool, env=ENV)
    result = await adapter.chat(
        UpstreamCall(
            body={"messages": MESSAGES, "temperature": 0.1}, models=["gpt-4o"], max_tokens=4
        )
    )
    doc = json.loads(result.body)
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["content"] == "Hello from gpt-4o on"
    assert result.usage is not None and result.usage.prompt_tokens == 4 + 2
    assert result.usage.completion_tokens == 4
    sent = fake.requests[-1]
    assert sent["headers"]["authorization"] == "Bearer sk-any"
    assert sent["body"]["temperature"] == 0.1 and sent["body"]["max_completion_tokens"] == 4

    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    await handle.start()
    chunks = [data async for data in handle]
    assert chunks[-1] == b"data: [DONE]\n\n"
    docs = [json.loads(c[6:]) for c in chunks[:-1]]
    assert all(d["object"] == "chat.completion.chunk" and d["choices"] for d in docs)
    assert handle.usage is not None and handle.usage.prompt_tokens == 6
    assert handle.ttfb_s is not None
    assert fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}

    asked = {"messages": MESSAGES, "stream_options": {"include_usage": True}}
    handle = adapter.chat_stream(UpstreamCall(body=asked, models=["gpt-4o"]))
    await handle.start()
    chunks = [data async for data in handle]
    assert json.loads(chunks[-2][6:])["usage"]["prompt_tokens"] == 6


async def test_embeddings(fake: FakeUpstream, pool: AnyLLMClients) -> None:
    adapter = AnyLLMAdapter(make_spec(fake.base_url), pool, env=ENV)
    result = await adapter.embeddings(
        UpstreamCall(body={"input": ["a b", "c"]}, models=["text-embedding-3-small"])
    )
    assert result.usage is not None and result.usage.prompt_tokens == 3
    assert len(json.loads(result.body)["data"]) == 2


async def test_errors_are_mapped(fake: FakeUpstream, pool: AnyLLMClients) -> None:
    adapter = AnyLLMAdapter(make_spec(fake.base_url), pool, env=ENV)
    call = UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"])
    fake.set_knobs(fail_next=1, fail_status=429, retry_after=2)
    with pytest.raises(UpstreamError) as limited:
        await adapter.chat(call)
    error = limited.value
    assert (error.kind, error.status, error.retry_after, error.retriable) == (
        ErrorKind.STATUS,
        429,
        2.0,
        True,
    )
    assert error.message.startswith("Rate limit reached")
    fake.set_knobs(fail_next=1, fail_status=500)
    with pytest.raises(UpstreamError) as broken:
        await adapter.chat(call)
    assert broken.value.status == 500 and broken.value.retriable
    assert len([r for r in fake.requests if r["status"] == 500]) == 1  # no SDK retries
    fake.knobs.forbidden_models = ["gpt-4o"]
    result = await adapter.chat(
        UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o", "gpt-4o-mini"])
    )
    assert result.model == "gpt-4o-mini"


async def test_timeout_and_cut_stream(fake: FakeUpstream, pool: AnyLLMClients) -> None:
    adapter = AnyLLMAdapter(make_spec(fake.base_url, timeoutSeconds=0.3), pool, env=ENV)
    fake.knobs.latency_ms = 2000
    started = time.monotonic()
    with pytest.raises(UpstreamError) as slow:
        await adapter.chat(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    assert slow.value.kind is ErrorKind.TIMEOUT and slow.value.retriable
    assert time.monotonic() - started < 1.5
    fake.set_knobs(latency_ms=0, cut_after_chunks=3)
    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    await handle.start()
    with pytest.raises(UpstreamError) as cut:
        async for _ in handle:
            pass
    assert cut.value.partial and not cut.value.retriable


async def test_one_client_per_provider_key_and_base(
    fake: FakeUpstream, pool: AnyLLMClients
) -> None:
    first = AnyLLMAdapter(make_spec(fake.base_url), pool, env=ENV)
    second = AnyLLMAdapter(make_spec(fake.base_url, timeoutSeconds=5), pool, env=ENV)
    other_key = AnyLLMAdapter(make_spec(fake.base_url), pool, env={"ANY_KEY": "sk-other"})
    assert len(pool) == 2
    assert first._client is second._client and first._client is not other_key._client
    client = first._client
    await first.aclose()
    assert len(pool) == 2 and not client.client.is_closed()
    await second.aclose()
    assert len(pool) == 1 and client.client.is_closed()
    await other_key.aclose()
    assert len(pool) == 0


async def test_unusable_provider_reports_config_error(pool: AnyLLMClients) -> None:
    spec = decode(
        ProviderSpec,
        {
            "name": "nokey",
            "type": "any-llm",
            "sdkProvider": "mistral",
            "baseURL": "https://api.mistral.ai/v1",
            "models": {"default": "mistral-small"},
            "apiKeyEnv": "NOT_SET_ANYWHERE",
        },
    )
    adapter = AnyLLMAdapter(spec, pool, env={})
    with pytest.raises(UpstreamError) as broken:
        await adapter.chat(UpstreamCall(body={"messages": MESSAGES}, models=["mistral-small"]))
    assert broken.value.kind is ErrorKind.CONFIG and not broken.value.retriable


def test_map_error_without_status() -> None:
    class ConnectError(Exception):
        pass

    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = ConnectError("refused")
    assert map_error(wrapped, provider="p", model="m").kind is ErrorKind.CONNECT
    assert map_error(TimeoutError(), provider="p", model="m").kind is ErrorKind.TIMEOUT


@pytest.mark.parametrize(
    "field",
    [
        {"extra_headers": {"x-forward-key-to": "collector.example"}},
        {"extra_body": {"store": True}},
        {"api_base": "https://collector.example/v1"},
        {"api_key": "sk-mine"},
        {"service_tier": "priority"},
    ],
)
async def test_only_allowed_fields_reach_the_sdk(
    fake: FakeUpstream, pool: AnyLLMClients, field: dict[str, Any]
) -> None:
    """Request fields become SDK keyword arguments of a call signed with the platform
    key: anything but the OpenAI parameters any-llm maps is refused, never sent."""
    adapter = AnyLLMAdapter(make_spec(fake.base_url), pool, env=ENV)
    before = len(fake.requests)
    calls: list[Awaitable[Any]] = [
        adapter.chat(UpstreamCall(body={"messages": MESSAGES, **field}, models=["gpt-4o"])),
        adapter.embeddings(
            UpstreamCall(body={"input": "hi", **field}, models=["text-embedding-3-small"])
        ),
    ]
    for call in calls:
        with pytest.raises(UpstreamError) as refused:
            await call
        error = refused.value
        assert error.client_fault and error.status == 400 and not error.retriable
        assert error.message == f"Unrecognized request argument supplied: {next(iter(field))}"
    assert len(fake.requests) == before  # nothing reached the provider
