"""The adapter registry: built from a config, hot-reloaded without cutting calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace

from aegis.sidecar.adapters import AdapterRegistry, ErrorKind, UpstreamCall, UpstreamError
from aegis.sidecar.adapters.anyllm import AnyLLMAdapter
from aegis.sidecar.adapters.openai_wire import OpenAIWireAdapter
from aegis.sidecar.contract import SidecarConfig, decode
from aegis.sidecar.fakes import FakeUpstream

MESSAGES = [{"role": "user", "content": "hi"}]


def config_for(fakes: dict[str, FakeUpstream], **openai_extra: Any) -> SidecarConfig:
    return decode(
        SidecarConfig,
        {
            "providers": [
                {
                    "name": "local",
                    "type": "ollama",
                    "baseURL": fakes["ollama"].base_url,
                    "models": {"default": "gemma3:4b"},
                },
                {
                    "name": "dashscope",
                    "type": "dashscope",
                    "baseURL": fakes["dashscope"].base_url,
                    "apiKeyEnv": "DS_KEY",
                    "models": {"default": "qwen-plus"},
                },
                {
                    "name": "openai",
                    "type": "openai",
                    "baseURL": fakes["openai"].base_url,
                    "apiKeyEnv": "OA_KEY",
                    "models": {"default": "gpt-4o-mini"},
                    "circuitBreaker": {"failureThreshold": 1, "openSeconds": 60},
                    **openai_extra,
                },
            ],
            "default": {"provider": "local"},
        },
    )


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeUpstream]]:
    async with (
        FakeUpstream.start(kind="openai") as openai,
        FakeUpstream.start(kind="dashscope") as dashscope,
        FakeUpstream.start(kind="ollama") as ollama,
    ):
        yield {"openai": openai, "dashscope": dashscope, "ollama": ollama}


ENV = {"DS_KEY": "sk-ds", "OA_KEY": "sk-oa"}


async def test_builds_one_adapter_per_provider(fakes: dict[str, FakeUpstream]) -> None:
    registry = AdapterRegistry(config_for(fakes), env=ENV)
    try:
        assert registry.providers() == ["local", "dashscope", "openai"]
        assert all(
            isinstance(registry.get(n).inner, OpenAIWireAdapter) for n in registry.providers()
        )
        for name, model in (
            ("local", "gemma3:4b"),
            ("dashscope", "qwen-plus"),
            ("openai", "gpt-4o-mini"),
        ):
            result = await registry.get(name).chat(
                UpstreamCall(body={"messages": MESSAGES}, models=[model])
            )
            assert model in json.loads(result.body)["choices"][0]["message"]["content"]
        assert fakes["dashscope"].requests[-1]["headers"]["authorization"] == "Bearer sk-ds"
        assert "local" in registry and "nope" not in registry
        with pytest.raises(KeyError):
            registry.get("nope")
    finally:
        await registry.aclose()


async def test_breaker_state_is_visible_to_the_router(fakes: dict[str, FakeUpstream]) -> None:
    changes: list[tuple[str, int]] = []
    registry = AdapterRegistry(
        config_for(fakes, maxRetries=0),
        env=ENV,
        breaker_listener=lambda name, state: changes.append((name, int(state))),
    )
    try:
        fakes["openai"].set_knobs(fail_next=1, fail_status=502)
        with pytest.raises(UpstreamError):
            await registry.get("openai").chat(
                UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o-mini"])
            )
        assert registry.is_open("openai") and not registry.is_open("local")
        assert registry.circuit_states()["openai"] == 1 and changes == [("openai", 1)]
        with pytest.raises(UpstreamError) as refused:
            await registry.get("openai").chat(
                UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o-mini"])
            )
        assert refused.value.kind is ErrorKind.CIRCUIT_OPEN
        registry.reload(config_for(fakes, maxRetries=1))
        assert registry.is_open("openai")  # breaker state survives the reload
    finally:
        await registry.aclose()


async def test_reload_keeps_in_flight_calls(fakes: dict[str, FakeUpstream]) -> None:
    registry = AdapterRegistry(config_for(fakes), env=ENV)
    try:
        unchanged = registry.get("local")
        old_openai = registry.get("openai")
        fakes["openai"].knobs.chunk_delay_ms = 30
        handle = old_openai.chat_stream(
            UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o-mini"])
        )
        await handle.start()
        registry.reload(config_for(fakes, timeoutSeconds=30))
        assert registry.get("local") is unchanged
        assert registry.get("openai") is not old_openai
        await asyncio.sleep(0.05)  # deliberate: time for a wrong early close to strike
        chunks = [data async for data in handle]  # the old adapter still serves its stream
        assert chunks[-1].endswith(b"data: [DONE]\n\n")
        await asyncio.wait_for(old_openai.wait_idle(), 2)
        result = await registry.get("openai").chat(
            UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o-mini"])
        )
        assert result.status == 200
        without_dashscope = config_for(fakes)
        without_dashscope = replace(
            without_dashscope,
            providers=[p for p in without_dashscope.providers if p.name != "dashscope"],
        )
        registry.reload(without_dashscope)
        assert "dashscope" not in registry
    finally:
        await registry.aclose()


async def test_any_llm_providers_share_clients(fakes: dict[str, FakeUpstream]) -> None:
    base = msgspec.to_builtins(config_for(fakes))
    base["providers"].append(
        {
            "name": "via-sdk",
            "type": "any-llm",
            "sdkProvider": "openai",
            "baseURL": fakes["openai"].base_url,
            "apiKeyEnv": "OA_KEY",
            "models": {"default": "gpt-4o"},
        }
    )
    registry = AdapterRegistry(decode(SidecarConfig, base), env=ENV)
    try:
        adapter = registry.get("via-sdk")
        assert isinstance(adapter.inner, AnyLLMAdapter)
        result = await adapter.chat(UpstreamCall(body={"messages": MESSAGES}, models=["gpt-4o"]))
        assert result.usage is not None
        assert len(registry.anyllm_clients) == 1
        base["providers"][-1]["timeoutSeconds"] = 10
        registry.reload(decode(SidecarConfig, base))
        await asyncio.sleep(0)  # deliberate: one loop turn for a wrong background close
        assert len(registry.anyllm_clients) == 1
    finally:
        await registry.aclose()
    assert len(registry.anyllm_clients) == 0
