"""The pass-through adapter against the fake upstreams over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aegis.sidecar.adapters import ErrorKind, UpstreamCall, UpstreamError
from aegis.sidecar.adapters.openai_wire import OpenAIWireAdapter, SharedSession
from aegis.sidecar.contract import ProviderSpec, decode
from aegis.sidecar.fakes import FakeUpstream
from tests.controlplane.procs import closed_port

MESSAGES = [{"role": "user", "content": "Tell me a joke"}]
PROMPT_TOKENS = 4 + 4
IMAGE_MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    }
]
ENV = {"TEST_KEY": "sk-from-env"}


def make_spec(base_url: str, type_: str = "openai", **extra: Any) -> ProviderSpec:
    return decode(
        ProviderSpec,
        {
            "name": "prov",
            "type": type_,
            "baseURL": base_url,
            "models": {"default": "m"},
            "apiKeyEnv": "TEST_KEY",
            **extra,
        },
    )


@pytest.fixture
async def session() -> AsyncIterator[SharedSession]:
    shared = SharedSession()
    yield shared
    await shared.aclose()


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream.start(kind="openai") as fake:
        yield fake


@pytest.fixture
async def dashscope_fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream.start(kind="dashscope") as fake:
        yield fake


def adapter_for(fake: FakeUpstream, session: SharedSession, **extra: Any) -> OpenAIWireAdapter:
    return OpenAIWireAdapter(make_spec(fake.base_url, fake.kind, **extra), session, env=ENV)


async def collect(handle: Any) -> list[bytes]:
    await handle.start()
    return [data async for data in handle]


def events_of(chunks: list[bytes]) -> list[bytes]:
    return [e for e in b"".join(chunks).split(b"\n\n") if e]


async def test_non_stream_pass_through(openai_fake: FakeUpstream, session: SharedSession) -> None:
    adapter = adapter_for(openai_fake, session)
    body = {"model": "logical", "messages": MESSAGES, "temperature": 0.2}
    result = await adapter.chat(UpstreamCall(body=body, models=["gpt-4o-mini"], max_tokens=50))
    doc = json.loads(result.body)
    assert result.status == 200 and result.model == "gpt-4o-mini"
    assert "gpt-4o-mini" in doc["choices"][0]["message"]["content"]
    assert result.usage is not None
    assert result.usage.prompt_tokens == PROMPT_TOKENS
    assert result.usage.completion_tokens == doc["usage"]["completion_tokens"]
    assert body == {"model": "logical", "messages": MESSAGES, "temperature": 0.2}
    sent = openai_fake.requests[-1]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["body"]["max_completion_tokens"] == 50 and "max_tokens" not in sent["body"]
    assert sent["body"]["temperature"] == 0.2
    assert sent["headers"]["authorization"] == "Bearer sk-from-env"
    assert sent["headers"]["user-agent"] == "aegis-sidecar"  # not aiohttp's
    assert "enable_thinking" not in sent["body"]


async def test_client_cap_and_stream_options_are_respected(
    openai_fake: FakeUpstream, session: SharedSession
) -> None:
    adapter = adapter_for(openai_fake, session)
    body = {"messages": MESSAGES, "max_tokens": 5, "stream_options": {"include_usage": True}}
    result = await adapter.chat(UpstreamCall(body=body, models=["gpt-4o"], max_tokens=99))
    assert result.usage is not None and result.usage.completion_tokens == 5
    sent = openai_fake.requests[-1]["body"]
    assert sent["max_tokens"] == 5 and "max_completion_tokens" not in sent
    assert "stream_options" not in sent


async def test_stream_strips_usage_chunk_the_client_did_not_ask_for(
    openai_fake: FakeUpstream, session: SharedSession
) -> None:
    adapter = adapter_for(openai_fake, session)
    handle = adapter.chat_stream(
        UpstreamCall(body={"messages": MESSAGES, "stream": True}, models=["gpt-4o"])
    )
    events = events_of(await collect(handle))
    assert events[-1] == b"data: [DONE]"
    docs = [json.loads(e[6:]) for e in events[:-1]]
    assert all(doc["choices"] for doc in docs)
    text = "".join(d["choices"][0]["delta"].get("content") or "" for d in docs)
    assert handle.usage is not None
    assert handle.usage.prompt_tokens == PROMPT_TOKENS
    assert handle.usage.completion_tokens == len(text.split())
    assert handle.ttfb_s is not None and handle.ttfb_s >= 0
    assert handle.model == "gpt-4o"
    assert openai_fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}


async def test_stream_keeps_usage_chunk_when_asked(
    openai_fake: FakeUpstream, session: SharedSession
) -> None:
    adapter = adapter_for(openai_fake, session)
    body = {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    handle = adapter.chat_stream(UpstreamCall(body=body, models=["gpt-4o"]))
    events = events_of(await collect(handle))
    last = json.loads(events[-2][6:])
    assert last["choices"] == [] and last["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert handle.usage is not None


async def test_stream_chunks_are_forwarded_as_they_arrive(
    openai_fake: FakeUpstream, session: SharedSession
) -> None:
    openai_fake.knobs.chunk_delay_ms = 20
    adapter = adapter_for(openai_fake, session)
    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    chunks = await collect(handle)
    assert len(chunks) > 5


async def test_dashscope_fields(dashscope_fake: FakeUpstream, session: SharedSession) -> None:
    adapter = adapter_for(dashscope_fake, session, visionHighResolution=True)
    call = UpstreamCall(
        body={"messages": IMAGE_MESSAGES},
        models=["qwen3-vl-30b-a3b-instruct"],
        max_tokens=64,
        vision=True,
    )
    result = await adapter.chat(call)
    sent = dashscope_fake.requests[-1]["body"]
    assert sent["vl_high_resolution_images"] is True
    assert sent["max_tokens"] == 64 and sent["enable_thinking"] is False
    assert result.usage is not None and result.usage.prompt_tokens == 4 + 3 + 40
    text_call = UpstreamCall(body={"messages": MESSAGES}, models=["qwen3-8b"])
    await adapter.chat(text_call)  # thinks by default: succeeds only with enable_thinking=false
    assert "vl_high_resolution_images" not in dashscope_fake.requests[-1]["body"]
    handle = adapter.chat_stream(
        UpstreamCall(body={"messages": MESSAGES, "enable_thinking": True}, models=["qwen-plus"])
    )
    events = events_of(await collect(handle))
    assert any(b"reasoning_content" in e for e in events)
    assert handle.usage is not None and handle.usage.completion_tokens > 7


async def test_vlm_falls_back_to_thinking_model_on_403(
    dashscope_fake: FakeUpstream, session: SharedSession
) -> None:
    dashscope_fake.knobs.forbidden_models = ["qwen3-vl-30b-a3b-instruct"]
    adapter = adapter_for(dashscope_fake, session)
    models = ["qwen3-vl-30b-a3b-instruct", "qwen3-vl-30b-a3b-thinking"]
    result = await adapter.chat(
        UpstreamCall(body={"messages": IMAGE_MESSAGES}, models=models, vision=True)
    )
    assert result.model == "qwen3-vl-30b-a3b-thinking"
    assert [r["status"] for r in dashscope_fake.requests] == [403, 200]
    assert "enable_thinking" not in dashscope_fake.requests[-1]["body"]
    handle = adapter.chat_stream(UpstreamCall(body={"messages": IMAGE_MESSAGES}, models=models))
    await collect(handle)
    assert handle.model == "qwen3-vl-30b-a3b-thinking"
    dashscope_fake.knobs.forbidden_models = models
    with pytest.raises(UpstreamError) as denied:
        await adapter.chat(UpstreamCall(body={"messages": IMAGE_MESSAGES}, models=models))
    assert denied.value.status == 403 and not denied.value.retriable
    assert denied.value.model == models[-1] and denied.value.code == "AccessDenied"


async def test_cut_stream_raises_after_forwarding(
    openai_fake: FakeUpstream, session: SharedSession
) -> None:
    openai_fake.knobs.cut_after_chunks = 4
    adapter = adapter_for(openai_fake, session)
    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    await handle.start()
    received: list[bytes] = []
    with pytest.raises(UpstreamError) as cut:
        async for data in handle:
            received.append(data)
    assert len(events_of(received)) == 4
    assert cut.value.kind is ErrorKind.PROTOCOL
    assert cut.value.partial and not cut.value.retriable
    assert handle.usage is None


async def test_timeouts(openai_fake: FakeUpstream, session: SharedSession) -> None:
    adapter = adapter_for(openai_fake, session, timeoutSeconds=0.2)
    openai_fake.knobs.latency_ms = 600
    with pytest.raises(UpstreamError) as slow:
        await adapter.chat(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    assert slow.value.kind is ErrorKind.TIMEOUT and slow.value.retriable
    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    with pytest.raises(UpstreamError) as slow_start:
        await handle.start()
    assert slow_start.value.kind is ErrorKind.TIMEOUT
    openai_fake.set_knobs(latency_ms=0, chunk_delay_ms=600)
    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    await handle.start()
    with pytest.raises(UpstreamError) as stalled:
        async for _ in handle:
            pass
    assert stalled.value.kind is ErrorKind.TIMEOUT and stalled.value.partial
    assert not stalled.value.retriable


async def test_a_stream_read_slowly_is_not_an_upstream_silence(
    openai_fake: FakeUpstream, session: SharedSession
) -> None:
    # The consumer holds each event longer than the read limit (a relay blocked on a
    # slow client): the upstream is not silent, the stream must not time out.
    adapter = adapter_for(openai_fake, session, timeoutSeconds=0.1)
    openai_fake.set_knobs(reply="one two three")
    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    await handle.start()
    received: list[bytes] = []
    async for data in handle:
        received.append(data)
        await asyncio.sleep(0.3)  # the slow consumer this test is about
    assert b"data: [DONE]" in b"".join(received)
    assert handle.usage is not None


async def test_connection_refused(session: SharedSession) -> None:
    with closed_port() as port:  # bound by us, never listening: nobody else can listen there
        adapter = OpenAIWireAdapter(make_spec(f"http://127.0.0.1:{port}/v1"), session, env=ENV)
        with pytest.raises(UpstreamError) as refused:
            await adapter.chat(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    assert refused.value.kind is ErrorKind.CONNECT and refused.value.retriable


async def test_status_errors(openai_fake: FakeUpstream, session: SharedSession) -> None:
    adapter = adapter_for(openai_fake, session)
    openai_fake.set_knobs(fail_next=1, fail_status=429, retry_after=3)
    with pytest.raises(UpstreamError) as limited:
        await adapter.chat(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    error = limited.value
    assert (error.kind, error.status, error.retry_after) == (ErrorKind.STATUS, 429, 3.0)
    assert error.retriable and error.code == "rate_limit_exceeded"
    assert "Rate limit" in error.message and "sk-from-env" not in repr(error)
    with pytest.raises(UpstreamError) as bad:
        await adapter.chat(UpstreamCall(body={"messages": []}, models=["gpt-4o"]))
    assert bad.value.client_fault and not bad.value.retriable
    keyless = OpenAIWireAdapter(make_spec(openai_fake.base_url), session, env={})
    with pytest.raises(UpstreamError) as unauthorized:
        await keyless.chat(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    assert unauthorized.value.status == 401


async def test_ollama_uses_its_v1_face(session: SharedSession) -> None:
    async with FakeUpstream.start(kind="ollama") as fake:
        spec = decode(
            ProviderSpec,
            {
                "name": "local",
                "type": "ollama",
                "baseURL": fake.base_url,
                "models": {"default": "gemma3:4b"},
            },
        )
        adapter = OpenAIWireAdapter(spec, session)
        result = await adapter.chat(UpstreamCall(body={"messages": MESSAGES}, models=["gemma3:4b"]))
        embedded = await adapter.embeddings(
            UpstreamCall(body={"input": ["a b c"]}, models=["nomic-embed-text"])
        )
    assert result.usage is not None and result.usage.prompt_tokens == PROMPT_TOKENS
    assert embedded.usage is not None and embedded.usage.prompt_tokens == 3
    assert [r["path"] for r in fake.requests] == ["/v1/chat/completions", "/v1/embeddings"]


async def test_missing_usage_is_none(openai_fake: FakeUpstream, session: SharedSession) -> None:
    openai_fake.knobs.omit_usage = True
    adapter = adapter_for(openai_fake, session)
    result = await adapter.chat(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    assert result.usage is None
    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    await collect(handle)
    assert handle.usage is None


async def test_client_disconnect_closes_upstream(
    openai_fake: FakeUpstream, session: SharedSession
) -> None:
    openai_fake.knobs.chunk_delay_ms = 50
    adapter = adapter_for(openai_fake, session)
    handle = adapter.chat_stream(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    await handle.start()
    iterator = aiter(handle)
    await anext(iterator)
    await handle.aclose()
    await iterator.aclose()  # type: ignore[attr-defined]
    result = await adapter.chat(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
    assert result.status == 200
