"""The fake Ollama: native NDJSON API and its OpenAI ``/v1`` face."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from aegis.sidecar.fakes import FakeUpstream

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "why is the sky blue?"}]
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
    "60e6kgAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream.start(kind="ollama") as upstream:
        yield upstream


async def _post(fake: FakeUpstream, path: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.root_url + path, json=body) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_chat_streams_ndjson_by_default(fake: FakeUpstream) -> None:
    status, content_type, raw = await _post(
        fake, "/api/chat", {"model": "gemma3:4b", "messages": MESSAGES}
    )
    assert status == 200 and content_type.startswith("application/x-ndjson")
    lines = [json.loads(line) for line in raw.splitlines()]
    assert all(not line["done"] for line in lines[:-1])
    text = "".join(line["message"]["content"] for line in lines)
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["prompt_eval_count"] == 4 + 5
    assert final["eval_count"] == len(text.split())
    assert "gemma3:4b" in text
    assert {"total_duration", "load_duration", "eval_duration"} <= set(final)


async def test_chat_non_stream_with_images(fake: FakeUpstream) -> None:
    body: dict[str, Any] = {
        "model": "qwen2.5vl:7b",
        "stream": False,
        "messages": [{"role": "user", "content": "what is in this image?", "images": [PNG]}],
        "options": {"num_predict": 2},
    }
    status, _, raw = await _post(fake, "/api/chat", body)
    doc = json.loads(raw)
    assert status == 200 and doc["done"] is True
    assert doc["prompt_eval_count"] == 4 + 5 + 10
    assert doc["eval_count"] == 2 and doc["done_reason"] == "length"
    assert fake.requests[-1]["images"] == 1
    body["messages"][0]["images"] = ["not base64!"]
    status, _, raw = await _post(fake, "/api/chat", body)
    assert status == 400 and "base64" in json.loads(raw)["error"]


async def test_native_errors_are_strings(fake: FakeUpstream) -> None:
    fake.knobs.missing_models = ["nope"]
    status, _, raw = await _post(fake, "/api/chat", {"model": "nope", "messages": MESSAGES})
    assert status == 404
    assert json.loads(raw) == {"error": 'model "nope" not found, try pulling it first'}
    fake.knobs.fail_next, fake.knobs.fail_status = 1, 503
    status, _, raw = await _post(fake, "/api/chat", {"model": "gemma3:4b", "messages": MESSAGES})
    assert status == 503 and isinstance(json.loads(raw)["error"], str)


async def test_embed_and_tags(fake: FakeUpstream) -> None:
    status, _, raw = await _post(
        fake, "/api/embed", {"model": "nomic-embed-text", "input": ["a b", "c d e"]}
    )
    doc = json.loads(raw)
    assert status == 200 and len(doc["embeddings"]) == 2 and doc["prompt_eval_count"] == 5
    async with aiohttp.ClientSession() as session, session.get(fake.root_url + "/api/tags") as resp:
        tags = await resp.json()
    assert "gemma3:4b" in [m["name"] for m in tags["models"]]


async def test_openai_face_without_auth(fake: FakeUpstream) -> None:
    assert fake.openai_base_url.endswith("/v1")
    sdk = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="ollama", max_retries=0)
    answer = await sdk.chat.completions.create(model="gemma3:4b", messages=MESSAGES)
    assert answer.system_fingerprint == "fp_ollama"
    stream = await sdk.chat.completions.create(
        model="gemma3:4b", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 9
    embedded = await sdk.embeddings.create(model="nomic-embed-text", input="x")
    assert embedded.usage.prompt_tokens == 1
    fake.knobs.missing_models = ["llava"]
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.chat.completions.create(model="llava", messages=MESSAGES)
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["type"] == "not_found_error"
    await sdk.close()
    status, _, _ = await _post(fake, "/v1/chat/completions", {"model": "x", "messages": MESSAGES})
    assert status == 200
