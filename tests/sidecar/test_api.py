"""The sidecar's OpenAI API, exercised with the official ``openai`` client."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import (
    ChatCompletionContentPartParam,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from aegis.sidecar.ledger.report import iter_entries
from tests.sidecar.conftest import Fakes, SidecarFactory, client_for
from tests.sidecar.shared_helpers import sample

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


async def ledger_rows(url: str) -> list[dict[str, Any]]:
    return [row async for row in iter_entries(url)]


async def test_chat_routes_by_rule_and_reports_headers(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    async with make_sidecar() as sc:
        client = client_for(sc)
        raw = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=USER,
            extra_headers={"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"},
        )
        completion = raw.parse()
        assert raw.headers["x-aegis-provider"] == "openai"
        assert raw.headers["x-aegis-model"] == "gpt-4o"
        assert raw.headers["x-aegis-rule"] == "critical"
        assert raw.headers["x-aegis-arm"] == "stable"
        assert completion.model == "gpt-4o"
        assert completion.usage is not None
        assert fakes.openai.requests[-1]["model"] == "gpt-4o"
        # the cost header is the price table applied to the usage the fake reported
        expected = (
            Decimal(completion.usage.prompt_tokens) * Decimal("2.5")
            + Decimal(completion.usage.completion_tokens) * Decimal("10")
        ) / Decimal(1_000_000)
        assert Decimal(raw.headers["x-aegis-cost-usd"]) == expected.quantize(Decimal("0.000001"))
        await sc.runtime.ledger.flush()
        rows = await ledger_rows(sc.runtime.ledger_url)
        assert [(r["provider"], r["model"], r["rule"], r["status"]) for r in rows] == [
            ("openai", "gpt-4o", "critical", "ok")
        ]
        assert Decimal(rows[0]["cost_usd"]) == Decimal(raw.headers["x-aegis-cost-usd"])


async def test_stream_relays_chunks_and_settles_usage(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    async with make_sidecar() as sc:
        client = client_for(sc)
        stream = await client.chat.completions.create(
            model="auto",
            messages=USER,
            stream=True,
            extra_headers={"X-Aegis-Batch-Size": "20"},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "qwen-plus" in text
        # the client did not ask for usage, so the usage-only chunk was not forwarded
        assert all(c.usage is None for c in chunks)
        sent = fakes.dashscope.requests[-1]
        assert sent["stream"] is True
        assert sent["body"]["stream_options"] == {"include_usage": True}
        await sc.runtime.ledger.flush()
        rows = await ledger_rows(sc.runtime.ledger_url)
        assert rows[0]["provider"] == "dashscope"
        assert rows[0]["tokens_out"] > 0
        assert Decimal(rows[0]["cost_usd"]) > 0
        assert rows[0]["ttft_ms"] is not None


async def test_stream_with_usage_requested_keeps_usage_chunk(
    make_sidecar: SidecarFactory,
) -> None:
    async with make_sidecar() as sc:
        stream = await client_for(sc).chat.completions.create(
            model="auto", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None and chunks[-1].choices == []


async def test_tools_pass_through(make_sidecar: SidecarFactory, fakes: Fakes) -> None:
    fakes.openai.set_knobs(tool_calls=True)
    tools: list[ChatCompletionToolParam] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with make_sidecar() as sc:
        completion = await client_for(sc).chat.completions.create(
            model="openai/gpt-4o-mini", messages=USER, tools=tools, tool_choice="required"
        )
        calls = completion.choices[0].message.tool_calls
        assert calls and calls[0].type == "function"
        assert calls[0].function.name == "get_weather"
        assert fakes.openai.requests[-1]["body"]["tool_choice"] == "required"


async def test_embeddings_and_models(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar() as sc:
        client = client_for(sc)
        raw = await client.embeddings.with_raw_response.create(model="auto", input=["a", "b"])
        result = raw.parse()
        assert len(result.data) == 2
        assert raw.headers["x-aegis-provider"] == "local"
        assert raw.headers["x-aegis-model"] == "nomic-embed-text:latest"
        models = [m.id async for m in client.models.list()]
        assert models[0] == "auto"
        assert "openai/gpt-4o" in models and "dashscope/qwen-plus" in models


async def test_vision_uses_vision_models_with_403_fallback(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    fakes.dashscope.set_knobs(forbidden_models=["qwen3-vl-30b-a3b-instruct"])

    def edit(doc: dict[str, Any]) -> None:
        doc["providers"][1]["visionHighResolution"] = True

    image: list[ChatCompletionContentPartParam] = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    async with make_sidecar(edit) as sc:
        raw = await client_for(sc).chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": image}],
            max_tokens=100,
            extra_headers={"X-Aegis-Batch-Size": "50"},
        )
        assert raw.headers["x-aegis-model"] == "qwen3-vl-30b-a3b-thinking"
        tried = [r["model"] for r in fakes.dashscope.requests]
        assert tried == ["qwen3-vl-30b-a3b-instruct", "qwen3-vl-30b-a3b-thinking"]
        assert fakes.dashscope.requests[-1]["body"]["vl_high_resolution_images"] is True


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ({"X-Aegis-Quality": "superb"}, "X-Aegis-Quality"),
        ({"X-Aegis-Complexity": "7"}, "X-Aegis-Complexity"),
        ({"X-Aegis-Batch-Size": "-3"}, "X-Aegis-Batch-Size"),
        ({"X-Aegis-Batch-Size": "many"}, "X-Aegis-Batch-Size"),
        ({"X-Aegis-Data-Class": "secret-ish"}, "X-Aegis-Data-Class"),
    ],
)
async def test_bad_header_values_are_400(
    make_sidecar: SidecarFactory, headers: dict[str, str], param: str
) -> None:
    async with make_sidecar() as sc:
        with pytest.raises(openai.BadRequestError) as info:
            await client_for(sc).chat.completions.create(
                model="auto", messages=USER, extra_headers=headers
            )
        assert info.value.status_code == 400
        body = info.value.body
        assert isinstance(body, dict) and body["param"] == param
        assert param in body["message"]


async def test_unknown_model_is_404_model_not_found(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar() as sc:
        with pytest.raises(openai.NotFoundError) as info:
            await client_for(sc).chat.completions.create(model="gpt-17-ultra", messages=USER)
        assert info.value.code == "model_not_found"
        assert "gpt-17-ultra" in info.value.message


async def test_bad_json_bad_shape_and_oversize_body(make_sidecar: SidecarFactory) -> None:
    def small(doc: dict[str, Any]) -> None:
        doc["listen"] = {"maxBodyBytes": 4096}

    async with make_sidecar(small) as sc, aiohttp.ClientSession() as http:
        url = sc.base_url + "/chat/completions"
        json_type = {"Content-Type": "application/json"}
        async with http.post(url, data=b"{not json", headers=json_type) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert error["code"] == "invalid_json" and "not valid JSON" in error["message"]
        async with http.post(url, json={"model": "auto", "messages": "hi"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "messages"
        big = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * 8000}]})
        async with http.post(url, data=big, headers=json_type) as resp:
            assert resp.status == 413
            error = (await resp.json())["error"]
            assert error["code"] == "request_too_large" and "4096" in error["message"]
        async with http.get(sc.base_url + "/nothing-here") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "unknown_url"


async def test_health_ready_and_metrics(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        root = sc.base_url.removesuffix("/v1")
        async with http.get(root + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(root + "/readyz") as resp:
            ready = await resp.json()
            assert resp.status == 200 and ready["ready"] is True
            assert ready["config"]["hash"] == sc.runtime.current.hash
        await client_for(sc).chat.completions.create(model="auto", messages=USER)
        assert sc.metrics_port is not None
        async with http.get(f"http://127.0.0.1:{sc.metrics_port}/metrics") as resp:
            text = await resp.text()
        ok = {"arm": "stable", "model": "gemma3:4b", "outcome": "ok", "provider": "local"}
        identity = {"namespace": "tests", "route": "rag-api"}  # on every series as served
        assert sample(text, "aegis_requests_total", **ok, **identity) == 1.0
        assert "aegis_request_duration_seconds_bucket" in text
        assert "aegis_config_info{" in text


async def test_metrics_listener_can_leave_loopback_while_the_api_cannot(
    make_sidecar: SidecarFactory, fakes: Fakes, tmp_path: Path
) -> None:
    from aegis.sidecar.contract import ConfigError, ListenSpec, decode, load_config
    from aegis.sidecar.http.server import serve

    async with make_sidecar():  # writes the config file
        pass
    loaded = load_config(tmp_path / "config.yaml")
    async with (
        serve(loaded, port=0, metrics_port=0, metrics_host="127.0.0.2") as sc,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"http://127.0.0.2:{sc.metrics_port}/metrics") as resp:
            assert resp.status == 200 and "aegis_config_info" in await resp.text()
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"http://127.0.0.2:{sc.port}/healthz")
    with pytest.raises(ConfigError, match="loopback"):
        decode(ListenSpec, {"host": "0.0.0.0"})
