"""``POST /v1/messages`` with the official ``anthropic`` client, over any provider; and
the native Anthropic provider behind every front end."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import anthropic
import pytest
from anthropic.types import MessageParam, ToolParam

from aegis.sidecar.fakes import FakeUpstream
from aegis.sidecar.fakes.content import TOOL_CALL_TOKENS
from aegis.sidecar.http.server import RunningSidecar
from aegis.sidecar.ledger.report import iter_entries
from tests.sidecar.conftest import Fakes, SidecarFactory, client_for

HELLO: list[MessageParam] = [{"role": "user", "content": "Say hello"}]
CRITICAL = {"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"}
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()


async def rows_of(url: str) -> list[dict[str, Any]]:
    return [row async for row in iter_entries(url)]


def sdk(running: RunningSidecar) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=running.base_url.removesuffix("/v1"), api_key="unused", max_retries=0
    )


@pytest.fixture
async def claude(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeUpstream]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    async with FakeUpstream.start("anthropic", api_key="sk-ant-test") as fake:
        yield fake


def with_claude(fake: FakeUpstream, *, default: bool = False) -> Callable[[dict[str, Any]], None]:
    """The route with an Anthropic provider (the default target when ``default``)."""

    def edit(doc: dict[str, Any]) -> None:
        doc["providers"].append(
            {
                "name": "claude",
                "type": "anthropic",
                "baseURL": fake.base_url,
                "apiKeyEnv": "ANTHROPIC_API_KEY",
                "models": {"default": "claude-sonnet-4-5", "vision": ["claude-sonnet-4-5"]},
                "maxRetries": 0,
            }
        )
        if default:
            doc["default"] = {"provider": "claude"}

    return edit


async def test_create_routes_records_and_answers_a_message(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    async with make_sidecar() as sc, sdk(sc) as client:
        raw = await client.messages.with_raw_response.create(
            model="auto",
            max_tokens=64,
            system=[{"type": "text", "text": "Be brief."}],
            messages=HELLO,
            extra_headers=CRITICAL,
        )
        message = raw.parse()
        assert raw.headers["x-aegis-provider"] == "openai"
        assert message.id == "msg_" + raw.headers["x-aegis-request-id"]
        assert message.model == "gpt-4o" and message.role == "assistant"
        [block] = message.content
        assert block.type == "text" and block.text.startswith("Hello from gpt-4o")
        assert message.stop_reason == "end_turn"
        assert message.usage.input_tokens == (4 + 2) + (4 + 2)
        assert fakes.openai.requests[-1]["body"]["max_completion_tokens"] == 64
        await sc.runtime.ledger.flush()
        [row] = await rows_of(sc.runtime.ledger_url)
        assert (row["provider"], row["model"], row["status"]) == ("openai", "gpt-4o", "ok")
        assert row["tokens_in"] == message.usage.input_tokens
        assert row["tokens_out"] == message.usage.output_tokens


async def test_stream_events_and_final_message(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar() as sc, sdk(sc) as client:
        async with client.messages.stream(model="auto", max_tokens=64, messages=HELLO) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
        assert kinds[0] == "message_start"
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert kinds.count("content_block_start") == 1
        [block] = final.content
        assert block.type == "text" and block.text.startswith("Hello from gemma3:4b")
        assert final.usage.input_tokens == 4 + 2  # from message_delta
        assert final.usage.output_tokens == len(block.text.split())
        await sc.runtime.ledger.flush()
        [row] = await rows_of(sc.runtime.ledger_url)
        assert row["tokens_out"] == final.usage.output_tokens and row["ttft_ms"] is not None


async def test_tool_use_round_trip(make_sidecar: SidecarFactory, fakes: Fakes) -> None:
    fakes.ollama.set_knobs(tool_calls=True)
    async with make_sidecar() as sc, sdk(sc) as client:
        first = await client.messages.create(
            model="auto",
            max_tokens=64,
            messages=HELLO,
            tools=[WEATHER],
            tool_choice={"type": "any"},
        )
        [call] = first.content
        assert call.type == "tool_use" and call.name == "get_weather"
        assert call.input == {"fake": True}
        assert first.stop_reason == "tool_use" and first.usage.output_tokens == TOOL_CALL_TOKENS
        fakes.ollama.set_knobs(tool_calls=False)
        second = await client.messages.create(
            model="auto",
            max_tokens=64,
            tools=[WEATHER],
            messages=[
                *HELLO,
                {"role": "assistant", "content": [call.model_dump()]},  # type: ignore[list-item]
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}
                    ],
                },
            ],
        )
        assert second.stop_reason == "end_turn"
        assert fakes.ollama.requests[-1]["messages"] == 3  # user, assistant tool call, tool
        async with client.messages.stream(
            model="auto",
            max_tokens=64,
            messages=HELLO,
            tools=[WEATHER],
            tool_choice={"type": "any"},
        ) as stream:
            final = await stream.get_final_message()
        [streamed] = final.content
        assert streamed.type == "tool_use" and streamed.input == {"fake": True}


async def test_image_blocks_use_the_vision_model(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    async with make_sidecar() as sc, sdk(sc) as client:
        raw = await client.messages.with_raw_response.create(
            model="auto",
            max_tokens=64,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                    ],
                }
            ],
        )
        assert raw.headers["x-aegis-model"] == "qwen2.5vl:7b"
        assert fakes.ollama.requests[-1]["images"] == 1


async def test_errors_in_anthropic_shape(make_sidecar: SidecarFactory, fakes: Fakes) -> None:
    def reject(doc: dict[str, Any]) -> None:
        doc["budgets"] = [
            {"name": "oai", "provider": "openai", "limitUSD": "0.000001", "onExceeded": "Reject"}
        ]

    async with make_sidecar(reject) as sc, sdk(sc) as client:
        with pytest.raises(anthropic.NotFoundError) as missing:
            await client.messages.create(model="claude-17", max_tokens=8, messages=HELLO)
        assert isinstance(missing.value.body, dict)
        assert missing.value.body["error"]["type"] == "not_found_error"
        assert "claude-17" in missing.value.body["error"]["message"]
        with pytest.raises(anthropic.RateLimitError) as budget:
            await client.messages.create(
                model="auto", max_tokens=8, messages=HELLO, extra_headers=CRITICAL
            )
        assert isinstance(budget.value.body, dict)
        assert budget.value.body["error"]["type"] == "rate_limit_error"
        assert "'oai'" in budget.value.body["error"]["message"]
        assert (
            budget.value.body["request_id"] == budget.value.response.headers["x-aegis-request-id"]
        )
        with pytest.raises(anthropic.BadRequestError) as bad:
            await client.messages.create(
                model="auto",
                max_tokens=8,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                            }
                        ],
                    }
                ],
            )
        assert "messages.0.content.0.type" in str(bad.value)
        async with aiohttp.ClientSession() as http:
            body = {"model": "auto", "messages": HELLO}
            async with http.post(sc.base_url + "/messages", json=body) as resp:
                assert resp.status == 400
                error = (await resp.json())["error"]
                assert error["type"] == "invalid_request_error" and "max_tokens" in error["message"]
        fakes.ollama.set_knobs(cut_after_chunks=3)
        with pytest.raises(anthropic.APIStatusError) as cut:
            async with client.messages.stream(
                model="auto", max_tokens=64, messages=HELLO
            ) as stream:
                async for _ in stream:
                    pass
        assert isinstance(cut.value.body, dict)
        assert cut.value.body["error"]["type"] == "api_error"
        assert "upstream stream ended early" in cut.value.body["error"]["message"]


async def test_messages_to_the_anthropic_provider(
    make_sidecar: SidecarFactory, claude: FakeUpstream
) -> None:
    async with make_sidecar(with_claude(claude)) as sc, sdk(sc) as client:
        raw = await client.messages.with_raw_response.create(
            model="claude/claude-sonnet-4-5",
            max_tokens=64,
            system="Be brief.",
            stop_sequences=["STOP"],
            messages=HELLO,
        )
        message = raw.parse()
        assert raw.headers["x-aegis-provider"] == "claude"
        [block] = message.content
        assert block.type == "text" and block.text.startswith("Hello from claude-sonnet-4-5")
        sent = claude.requests[-1]
        assert sent["path"] == "/v1/messages" and sent["headers"]["x-api-key"] == "sk-ant-test"
        assert sent["body"]["max_tokens"] == 64 and sent["body"]["stop_sequences"] == ["STOP"]
        # Claude Sonnet 4.5: $3 in, $15 out per 1M tokens
        usage = message.usage
        expected = (usage.input_tokens * Decimal(3) + usage.output_tokens * Decimal(15)) / 10**6
        assert Decimal(raw.headers["x-aegis-cost-usd"]) == expected.quantize(Decimal("0.000001"))
        async with client.messages.stream(
            model="claude/claude-sonnet-4-5", max_tokens=64, messages=HELLO, tools=[WEATHER]
        ) as stream:
            final = await stream.get_final_message()
        assert final.usage.input_tokens == usage.input_tokens - (4 + 2)  # no system prompt
        await sc.runtime.ledger.flush()
        rows = await rows_of(sc.runtime.ledger_url)
        assert [(r["provider"], r["model"], r["status"]) for r in rows] == [
            ("claude", "claude-sonnet-4-5", "ok")
        ] * 2


async def test_openai_apis_reach_the_anthropic_provider(
    make_sidecar: SidecarFactory, claude: FakeUpstream
) -> None:
    claude.set_knobs(tool_calls=True)
    async with make_sidecar(with_claude(claude, default=True)) as sc:
        client = client_for(sc)
        completion = await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        )
        [call] = completion.choices[0].message.tool_calls or []
        assert call.type == "function" and call.function.name == "get_weather"
        assert completion.choices[0].finish_reason == "tool_calls"
        claude.set_knobs(tool_calls=False)
        stream = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text.startswith("Hello from claude-sonnet-4-5")
        response = await client.responses.create(model="auto", input="Hi", max_output_tokens=5)
        assert response.status == "incomplete" and response.usage is not None
        assert response.usage.output_tokens == 5
        assert claude.requests[-1]["body"]["max_tokens"] == 5
        # Anthropic has no embeddings: a pinned call falls back without reaching it
        calls = len(claude.requests)
        embedded = await client.embeddings.with_raw_response.create(
            model="claude/claude-sonnet-4-5", input="x"
        )
        assert embedded.headers["x-aegis-fallback"] == "claude:config"
        assert embedded.headers["x-aegis-provider"] != "claude"
        assert len(claude.requests) == calls
