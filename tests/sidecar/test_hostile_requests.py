"""Hostile requests: input alone never causes a 5xx; each bound answers a 4xx naming it.

Regression cases first (each answered 500 or 503 before): a lone UTF-16 surrogate
escaped in a forwarded field, an image part in a system message, image input on a
route without a vision model. Then the resource bounds of ``listen.limits``, each
through a running sidecar with the answer's shape checked.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from aegis.sidecar.fakes import FakeUpstream
from aegis.sidecar.ledger.report import iter_entries
from tests.sidecar.conftest import Fakes, SidecarFactory

CHAT = "/chat/completions"
USER = [{"role": "user", "content": "hello"}]
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}}


def no_vision(doc: dict[str, Any]) -> None:
    for provider in doc["providers"]:
        provider["models"].pop("vision", None)


def limits(**values: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["listen"] = {"limits": values}

    return edit


async def post(
    base_url: str, path: str, data: bytes | str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            base_url + path,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
        ) as response,
    ):
        return response.status, dict(response.headers), json.loads(await response.read())


def openai_error(payload: dict[str, Any]) -> dict[str, Any]:
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return dict(error)


@pytest.mark.parametrize(
    "field", ["tool_choice", "logit_bias", "response_format", "stop", "user", "metadata"]
)
async def test_an_escaped_lone_surrogate_is_a_400_naming_the_field(
    make_sidecar: SidecarFactory, fakes: Fakes, field: str
) -> None:
    raw = json.dumps({"model": "auto", "messages": USER})[:-1] + f', "{field}": "\\ud800"}}'
    async with make_sidecar() as sc:
        status, _, payload = await post(sc.base_url, CHAT, raw)
    assert status == 400
    error = openai_error(payload)
    assert error["param"] == field
    assert "surrogate" in error["message"]
    assert fakes.ollama.requests == []


async def test_lone_surrogates_in_keys_nested_values_and_raw_bytes(
    make_sidecar: SidecarFactory,
) -> None:
    async with make_sidecar() as sc:
        nested = (
            '{"model":"auto","messages":[{"role":"user",'
            '"content":[{"type":"text","text":"a\\udfff"}]}]}'
        )
        status, _, payload = await post(sc.base_url, CHAT, nested)
        assert (status, openai_error(payload)["param"]) == (400, "messages[0].content[0].text")
        key = (
            '{"model":"auto","messages":[{"role":"user","content":"hi"}],'
            '"metadata":{"\\ud83d":"x"}}'
        )
        status, _, payload = await post(sc.base_url, CHAT, key)
        assert (status, openai_error(payload)["param"]) == (400, "metadata.\ud83d")
        # A surrogate encoded as UTF-8 bytes (CESU style) is not UTF-8 at all.
        encoded = b'{"model":"auto","messages":[{"role":"user","content":"\xed\xa0\x80"}]}'
        status, _, payload = await post(sc.base_url, CHAT, encoded)
        assert status == 400 and "UTF-8" in openai_error(payload)["message"]
        # A proper pair is one character and passes.
        pair = '{"model":"auto","messages":[{"role":"user","content":"smile \\ud83d\\ude00"}]}'
        status, _, _ = await post(sc.base_url, CHAT, pair)
        assert status == 200


async def test_messages_api_names_the_field_its_own_way(make_sidecar: SidecarFactory) -> None:
    raw = (
        '{"model":"auto","max_tokens":16,'
        '"messages":[{"role":"user","content":[{"type":"text","text":"\\ud800"}]}]}'
    )
    async with make_sidecar() as sc:
        status, _, payload = await post(sc.base_url.removesuffix("/v1"), "/v1/messages", raw)
    assert status == 400
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert "messages.0.content.0.text" in payload["error"]["message"]


async def test_an_image_in_a_system_message_is_a_400(make_sidecar: SidecarFactory) -> None:
    body = {
        "model": "auto",
        "messages": [{"role": "system", "content": [IMAGE]}, *USER],
    }
    async with make_sidecar(no_vision) as sc:
        status, _, payload = await post(sc.base_url, CHAT, json.dumps(body))
    assert status == 400
    error = openai_error(payload)
    assert error["param"] == "messages[0].content[0].type"
    assert "system message takes text parts only" in error["message"]


async def test_image_input_on_a_route_without_vision_models_is_a_400(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": [IMAGE]}]}
    async with make_sidecar(no_vision) as sc:
        status, headers, payload = await post(sc.base_url, CHAT, json.dumps(body))
        await sc.runtime.ledger.flush()
        rows = [row async for row in iter_entries(sc.runtime.ledger_url)]
    assert status == 400
    error = openai_error(payload)
    assert error["code"] == "image_input_unsupported"
    assert error["param"] == "messages[0].content[0]"
    assert "X-Aegis-Request-Id" in headers
    assert [(r["status"], r["http_status"]) for r in rows] == [("refused", 400)]
    assert fakes.ollama.requests == fakes.dashscope.requests == []


async def test_a_route_with_vision_models_still_serves_images(make_sidecar: SidecarFactory) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": [IMAGE]}]}
    async with make_sidecar() as sc:
        status, headers, _ = await post(sc.base_url, CHAT, json.dumps(body))
    assert status == 200
    assert headers["X-Aegis-Model"] == "qwen2.5vl:7b"


# -- resource bounds -------------------------------------------------------------------


async def test_nesting_deeper_than_the_bound_is_a_400(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar(limits(maxJsonDepth=16)) as sc:
        deep: Any = "x"
        for _ in range(20):
            deep = {"a": deep}
        body = {"model": "auto", "messages": USER, "metadata": deep}
        status, _, payload = await post(sc.base_url, CHAT, json.dumps(body))
        assert status == 400
        error = openai_error(payload)
        assert error["param"].startswith("metadata.a.a")
        assert "16 levels" in error["message"]
        # Deeper than the JSON parser itself goes: still a 400, not a 500.
        status, _, payload = await post(sc.base_url, CHAT, "[" * 200_000 + "]" * 200_000)
        assert status == 400 and "nested deeper" in openai_error(payload)["message"]


async def test_json_text_nested_past_the_parser_in_a_string_is_a_400(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    """Tool-call arguments are JSON text, read by the privacy scan (escaped values in
    them are found): text it cannot read is refused, never forwarded unscanned."""

    def body(arguments: str) -> str:
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        messages = [
            *USER,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
        ]
        return json.dumps({"model": "auto", "messages": messages})

    async with make_sidecar() as sc:
        status, _, payload = await post(sc.base_url, CHAT, body("[" * 100_000 + "]" * 100_000))
        assert status == 400
        error = openai_error(payload)
        assert error["param"] == "messages[1].tool_calls[0].function.arguments"
        assert "nested too deeply" in error["message"]
        forwarded = len(fakes.ollama.requests) + len(fakes.dashscope.requests)
        assert forwarded == 0
        status, _, _ = await post(sc.base_url, CHAT, body('{"city": [["Paris"]]}'))
        assert status == 200


@pytest.mark.parametrize(
    ("setting", "body", "param"),
    [
        ("maxMessages", {"messages": USER * 5}, "messages"),
        (
            "maxTools",
            {
                "messages": USER,
                "tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(5)],
            },
            "tools",
        ),
        (
            "maxContentParts",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 5}]},
            "messages[0].content",
        ),
    ],
)
async def test_counts_over_their_bound_are_a_400(
    make_sidecar: SidecarFactory, setting: str, body: dict[str, Any], param: str
) -> None:
    async with make_sidecar(limits(**{setting: 4})) as sc:
        status, _, payload = await post(sc.base_url, CHAT, json.dumps({"model": "auto", **body}))
    assert status == 400
    error = openai_error(payload)
    assert (error["param"], error["code"]) == (param, "array_above_max_length")
    assert f"listen.limits.{setting}" in error["message"]


async def test_headers_over_the_bound_are_a_431_in_the_api_shape(
    make_sidecar: SidecarFactory,
) -> None:
    async with make_sidecar(limits(maxHeaderBytes=4096)) as sc:
        big = {f"X-Pad-{i}": "p" * 1000 for i in range(5)}
        body = json.dumps({"model": "auto", "messages": USER})
        status, _, payload = await post(sc.base_url, CHAT, body, big)
        assert status == 431
        assert openai_error(payload)["code"] == "request_header_fields_too_large"
        root = sc.base_url.removesuffix("/v1")
        status, _, payload = await post(root, "/v1/messages", body, big)
        assert status == 431 and payload["type"] == "error"


async def test_a_header_that_is_not_utf8_is_a_400(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar() as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        body = json.dumps({"model": "auto", "messages": USER}).encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Aegis-User: \xff\xfe\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % len(body)
            + body
        )
        answer = await reader.read()
        writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(rest)["error"]["param"] == "X-Aegis-User"


async def test_a_body_that_does_not_arrive_in_time_is_a_408(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar(limits(clientTimeoutSeconds=0.3)) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read(65536)
        writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(rest)["error"]["code"] == "request_timeout"


async def test_requests_over_the_concurrency_cap_get_429_with_retry_after(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    fakes.ollama.set_knobs(latency_ms=400)
    body = json.dumps({"model": "auto", "messages": USER})
    async with make_sidecar(limits(maxConcurrentRequests=2)) as sc:
        answers = await asyncio.gather(*(post(sc.base_url, CHAT, body) for _ in range(5)))
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [200, 200, 429, 429, 429]
        for status, headers, payload in answers:
            if status == 429:
                assert headers["Retry-After"] == "1"
                assert openai_error(payload)["code"] == "too_many_concurrent_requests"
        refused = sc.runtime.metrics.registry.get_sample_value(
            "aegis_refusals_total", {"code": "too_many_concurrent_requests"}
        )
        assert refused == 3
        # The cap is of requests in flight: once they are done, it admits again.
        status, _, _ = await post(sc.base_url, CHAT, body)
        assert status == 200


async def test_a_field_anthropic_cannot_take_is_a_400_not_a_500(
    make_sidecar: SidecarFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the fuzz tests: ``"stop": true`` crashed the Messages translation."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    async with FakeUpstream.start("anthropic") as claude:

        def to_claude(doc: dict[str, Any]) -> None:
            doc["providers"].append(
                {
                    "name": "claude",
                    "type": "anthropic",
                    "baseURL": claude.base_url,
                    "apiKeyEnv": "ANTHROPIC_API_KEY",
                    "models": {"default": "claude-haiku-4-5"},
                }
            )
            doc["default"] = {"provider": "claude"}
            doc["rules"] = []

        async with make_sidecar(to_claude) as sc:
            for field, value in (
                ("stop", True),
                ("tools", {"a": 1}),
                ("response_format", {"type": "json_schema", "json_schema": "x"}),
            ):
                body = {"model": "auto", "messages": USER, field: value}
                status, _, payload = await post(sc.base_url, CHAT, json.dumps(body))
                assert status in (200, 400), (field, payload)
                if status == 400:
                    assert f"'{field}'" in openai_error(payload)["message"]
    assert all(r["status"] == 200 for r in claude.requests)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (CHAT, "max_tokens"),
        (CHAT, "max_completion_tokens"),
        ("/responses", "max_output_tokens"),
        ("/messages", "max_tokens"),
    ],
)
async def test_a_token_cap_beyond_any_model_is_a_400_naming_the_field(
    make_sidecar: SidecarFactory, fakes: Fakes, path: str, field: str
) -> None:
    if path == "/responses":
        body: dict[str, Any] = {"model": "auto", "input": "hello", field: 10**30}
    else:
        body = {"model": "auto", "messages": USER, field: 10**30}
    async with make_sidecar() as sc:
        status, _, payload = await post(sc.base_url, path, json.dumps(body))
    assert status == 400
    error = payload["error"]
    assert field in error["message"] or error.get("param") == field
    assert fakes.ollama.requests == []
