"""``POST /v1/responses`` with the official ``openai`` client: the Responses API over
upstreams that speak chat completions, routed, budgeted and recorded like chat."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.responses import FunctionToolParam, ResponseInputParam

from aegis.sidecar.fakes.content import TOOL_ARGUMENTS, TOOL_CALL_TOKENS
from aegis.sidecar.ledger.report import iter_entries
from tests.sidecar.conftest import Fakes, SidecarFactory, client_for

CRITICAL = {"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"}  # -> openai gpt-4o
BATCH = {"X-Aegis-Batch-Size": "20"}  # -> dashscope
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}
IMAGE = "data:image/png;base64,iVBORw0KGgo="


async def rows_of(url: str) -> list[dict[str, Any]]:
    return [row async for row in iter_entries(url)]


async def test_create_answers_a_response_routed_costed_and_recorded(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    async with make_sidecar() as sc:
        raw = await client_for(sc).responses.with_raw_response.create(
            model="auto", instructions="Be brief.", input="Say hello", extra_headers=CRITICAL
        )
        response = raw.parse()
        assert raw.headers["x-aegis-provider"] == "openai"
        assert raw.headers["x-aegis-model"] == "gpt-4o"
        assert raw.headers["x-aegis-rule"] == "critical"
        request_id = raw.headers["x-aegis-request-id"]
        assert response.id == f"resp_{request_id}"
        assert response.status == "completed" and response.model == "gpt-4o"
        assert response.instructions == "Be brief."
        # instructions + input = two chat messages upstream (the fake counts them)
        sent = fakes.openai.requests[-1]
        assert sent["path"] == "/v1/chat/completions" and sent["messages"] == 2
        assert response.output_text.startswith("Hello from gpt-4o on the fake openai upstream")
        assert response.usage is not None
        # the fake's rule: 4 per message + words = (4 + 2) + (4 + 2)
        assert response.usage.input_tokens == 12
        assert response.usage.total_tokens == 12 + response.usage.output_tokens
        expected = (
            Decimal(12) * Decimal("2.5") + response.usage.output_tokens * Decimal(10)
        ) / Decimal(10**6)
        assert Decimal(raw.headers["x-aegis-cost-usd"]) == expected.quantize(Decimal("0.000001"))
        await sc.runtime.ledger.flush()
        [row] = await rows_of(sc.runtime.ledger_url)
        assert (row["request_id"], row["provider"], row["model"], row["status"]) == (
            request_id,
            "openai",
            "gpt-4o",
            "ok",
        )
        assert (row["tokens_in"], row["tokens_out"]) == (12, response.usage.output_tokens)
        assert Decimal(row["cost_usd"]) == Decimal(raw.headers["x-aegis-cost-usd"])


async def test_stream_event_sequence_and_usage(make_sidecar: SidecarFactory, fakes: Fakes) -> None:
    async with make_sidecar() as sc:
        stream = await client_for(sc).responses.create(
            model="auto", input="Say hello", stream=True, extra_headers=BATCH
        )
        events = [event async for event in stream]
        kinds = [event.type for event in events]
        deltas = kinds.count("response.output_text.delta")
        assert deltas > 1
        assert kinds == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            *["response.output_text.delta"] * deltas,
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert "qwen-plus" in text
        completed = events[-1]
        assert completed.type == "response.completed"
        assert completed.response.output_text == text
        assert completed.response.usage is not None
        sent = fakes.dashscope.requests[-1]
        assert sent["stream"] is True and sent["body"]["stream_options"] == {"include_usage": True}
        await sc.runtime.ledger.flush()
        [row] = await rows_of(sc.runtime.ledger_url)
        assert row["provider"] == "dashscope" and row["ttft_ms"] is not None
        assert row["tokens_in"] == completed.response.usage.input_tokens
        assert row["tokens_out"] == completed.response.usage.output_tokens


async def test_stream_helper_gives_the_final_response(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar() as sc:
        client = client_for(sc)
        async with client.responses.stream(model="auto", input="Say hello") as stream:
            texts = [e.delta async for e in stream if e.type == "response.output_text.delta"]
            final = await stream.get_final_response()
        assert final.status == "completed"
        assert final.output_text == "".join(texts)
        assert final.output_text.startswith("Hello from gemma3:4b")


async def test_function_tools_round_trip(make_sidecar: SidecarFactory, fakes: Fakes) -> None:
    fakes.openai.set_knobs(tool_calls=True)
    async with make_sidecar() as sc:
        client = client_for(sc)
        first = await client.responses.create(
            model="openai/gpt-4o-mini",
            input="Weather in Paris?",
            tools=[WEATHER],
            tool_choice="required",
            parallel_tool_calls=False,
        )
        [call] = first.output
        assert call.type == "function_call"
        assert call.name == "get_weather" and call.arguments == TOOL_ARGUMENTS
        assert first.usage is not None and first.usage.output_tokens == TOOL_CALL_TOKENS
        sent = fakes.openai.requests[-1]["body"]
        assert sent["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parameters": WEATHER["parameters"],
                    "strict": False,
                },
            }
        ]
        assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
        # the call and its output go back as input items; the fake then answers in text
        fakes.openai.set_knobs(tool_calls=False)
        follow_up: ResponseInputParam = [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ]
        second = await client.responses.create(
            model="openai/gpt-4o-mini", input=follow_up, tools=[WEATHER]
        )
        assert second.output_text.startswith("Hello from gpt-4o-mini")
        assert fakes.openai.requests[-1]["messages"] == 3  # user, assistant tool call, tool


async def test_streamed_tool_call(make_sidecar: SidecarFactory, fakes: Fakes) -> None:
    fakes.ollama.set_knobs(tool_calls=True)
    async with make_sidecar() as sc:
        client = client_for(sc)
        async with client.responses.stream(
            model="auto", input="Weather?", tools=[WEATHER]
        ) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
        assert "response.function_call_arguments.delta" in kinds
        assert "response.function_call_arguments.done" in kinds
        [call] = final.output
        assert call.type == "function_call" and call.arguments == TOOL_ARGUMENTS
        assert call.status == "completed"


async def test_image_input_uses_the_vision_model(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    async with make_sidecar() as sc:
        raw = await client_for(sc).responses.with_raw_response.create(
            model="auto",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": IMAGE, "detail": "auto"},
                    ],
                }
            ],
        )
        assert raw.headers["x-aegis-model"] == "qwen2.5vl:7b"
        assert fakes.ollama.requests[-1]["images"] == 1
        assert raw.parse().output_text.startswith("Hello from qwen2.5vl:7b")


async def test_json_schema_format_and_the_output_cap(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
    }
    async with make_sidecar() as sc:
        response = await client_for(sc).responses.create(
            model="auto",
            input="Say hello",
            max_output_tokens=3,
            text={"format": {"type": "json_schema", "name": "out", "schema": schema}},
            extra_headers=BATCH,
        )
        sent = fakes.dashscope.requests[-1]["body"]
        assert sent["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": schema},
        }
        # DashScope reads max_tokens: the cap travels under that name
        assert sent["max_tokens"] == 3 and "max_completion_tokens" not in sent
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.usage is not None and response.usage.output_tokens == 3
        assert response.text is not None and response.text.format is not None
        assert response.text.format.type == "json_schema"


async def test_budget_reserves_the_output_cap(make_sidecar: SidecarFactory, fakes: Fakes) -> None:
    def budget(doc: dict[str, Any]) -> None:
        # qwen-plus output $1.2/1M: 1,000,000 tokens out = $1.20 > $1, 1,000 tokens fit
        doc["budgets"] = [
            {"name": "ds", "provider": "dashscope", "limitUSD": "1", "onExceeded": "Reject"}
        ]

    async with make_sidecar(budget) as sc:
        client = client_for(sc)
        with pytest.raises(openai.RateLimitError) as info:
            await client.responses.create(
                model="auto", input="Say hello", max_output_tokens=1_000_000, extra_headers=BATCH
            )
        assert info.value.code == "budget_exceeded"
        assert fakes.dashscope.requests == []
        ok = await client.responses.create(
            model="auto", input="Say hello", max_output_tokens=1000, extra_headers=BATCH
        )
        assert ok.status == "completed"


@pytest.mark.parametrize(
    ("kwargs", "param", "says"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id", "no conversation state"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "only function tools"),
        ({"max_output_tokens": -1}, "max_output_tokens", "integer >= 1"),
    ],
)
async def test_bad_requests_are_400_naming_the_field(
    make_sidecar: SidecarFactory, kwargs: dict[str, Any], param: str, says: str
) -> None:
    async with make_sidecar() as sc:
        with pytest.raises(openai.BadRequestError) as info:
            await client_for(sc).responses.create(model="auto", input="Hi", **kwargs)
        assert info.value.param == param
        assert says in info.value.message


async def test_errors_in_openai_shape(make_sidecar: SidecarFactory, fakes: Fakes) -> None:
    async with make_sidecar() as sc:
        client = client_for(sc)
        with pytest.raises(openai.NotFoundError) as missing:
            await client.responses.create(model="gpt-17-ultra", input="Hi")
        assert missing.value.code == "model_not_found"
        fakes.ollama.set_knobs(fail_next=10, fail_status=500)
        fakes.dashscope.set_knobs(fail_next=10, fail_status=503)
        with pytest.raises(openai.APIStatusError) as down:
            await client.responses.create(model="auto", input="Hi")
        assert down.value.status_code == 503 and down.value.code == "upstream_unavailable"


async def test_cut_stream_ends_with_response_failed(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    fakes.dashscope.set_knobs(cut_after_chunks=3)
    async with make_sidecar() as sc:
        stream = await client_for(sc).responses.create(
            model="auto", input="Say hello", stream=True, extra_headers=BATCH
        )
        events = [event async for event in stream]
        last = events[-1]
        assert last.type == "response.failed"
        assert last.response.status == "failed"
        assert last.response.error is not None
        assert "upstream_stream_interrupted" in last.response.error.message
        await sc.runtime.ledger.flush()
        [row] = await rows_of(sc.runtime.ledger_url)
        assert row["status"] == "error" and row["http_status"] == 502


async def test_raw_wire_has_event_lines_and_no_done(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        async with http.post(
            sc.base_url + "/responses", json={"model": "auto", "input": "Hi", "stream": True}
        ) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = (await resp.read()).decode()
        blocks = [b for b in raw.split("\n\n") if b.strip() and not b.startswith(":")]
        for block in blocks:
            event, data = block.split("\n")
            assert event.startswith("event: ") and data.startswith("data: ")
            assert json.loads(data[6:])["type"] == event[7:]
        assert "[DONE]" not in raw
