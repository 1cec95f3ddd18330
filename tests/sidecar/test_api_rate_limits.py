"""Rate limits through the running sidecar (standalone: the whole limit is local).

The window is shortened to 2 s with ``AEGIS_RATE_WINDOW_SECONDS`` (a test-only knob:
a limit then counts per 2 s), so that a refused client can succeed once a slot
frees without a minute's wait; the shared 60 s behaviour is the acceptance test's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from aegis.sidecar.ledger.report import iter_entries
from aegis.sidecar.limits.limiter import WINDOW_ENV
from tests.sidecar.conftest import SidecarFactory, client_for

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]
WINDOW = 2.0


@pytest.fixture(autouse=True)
def short_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WINDOW_ENV, str(WINDOW))


def route_limits(**limits: int) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["rateLimits"] = limits

    return edit


async def rows_of(url: str) -> list[dict[str, Any]]:
    return [row async for row in iter_entries(url)]


async def test_over_the_route_rpm_is_a_429_in_openai_shape_with_the_headers(
    make_sidecar: SidecarFactory,
) -> None:
    async with make_sidecar(route_limits(requestsPerMinute=2)) as sc:
        client = client_for(sc)
        first = await client.chat.completions.with_raw_response.create(model="auto", messages=USER)
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert "anthropic-ratelimit-requests-limit" not in first.headers
        await client.chat.completions.create(model="auto", messages=USER)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="auto", messages=USER)
        error = info.value
        assert error.code == "rate_limit_exceeded"
        assert error.type == "requests"
        assert "route tests/rag-api on requests per min" in error.message
        headers = error.response.headers
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert 1 <= int(headers["Retry-After"]) <= WINDOW
        assert 0 < int(headers["retry-after-ms"]) <= WINDOW * 1000
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        await sc.runtime.ledger.flush()
        rows = await rows_of(sc.runtime.ledger_url)
    refused = [r for r in rows if r["status"] == "refused"]
    assert len(rows) == 3 and len(refused) == 1
    assert refused[0]["http_status"] == 429
    assert refused[0]["fallback_reason"] == "rate_limit:requests"
    assert refused[0]["provider"] == "none"


async def test_the_openai_client_retries_after_retry_after_and_then_succeeds(
    make_sidecar: SidecarFactory,
) -> None:
    async with make_sidecar(route_limits(requestsPerMinute=1)) as sc:
        patient = openai.AsyncOpenAI(base_url=sc.base_url, api_key="unused", max_retries=3)
        await patient.chat.completions.create(model="auto", messages=USER)
        started = time.monotonic()
        raw = await patient.chat.completions.with_raw_response.create(model="auto", messages=USER)
        waited = time.monotonic() - started
        assert raw.http_request is not None
        assert raw.retries_taken >= 1  # refused first, retried by the client itself
        assert raw.headers["x-ratelimit-limit-requests"] == "1"
        # it waited as told (the slot frees a window after the first call), no longer
        assert waited >= WINDOW * 0.5
        assert sc.runtime.limits.refusals  # the sidecar did refuse it


async def test_tokens_per_minute_count_the_worst_case_and_return_the_unused_part(
    make_sidecar: SidecarFactory,
) -> None:
    async with make_sidecar(route_limits(tokensPerMinute=3000)) as sc:
        client = client_for(sc)
        with pytest.raises(openai.RateLimitError) as info:  # alone more than the limit
            await client.chat.completions.create(model="auto", messages=USER, max_tokens=5000)
        assert info.value.type == "tokens"
        assert info.value.response.headers["x-ratelimit-limit-tokens"] == "3000"
        # 2,000 reserved, a few dozen used: the next one fits at once
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=USER, max_tokens=2000
            )
            remaining = int(raw.headers["x-ratelimit-remaining-tokens"])
            assert remaining < 1000  # reported right after the reservation
        (pool,) = sc.runtime.limits.pools.values()
        assert pool.reserved == 0
        assert 0 < pool.busy.total < 500  # what the three calls really used


async def test_messages_get_anthropic_rate_limit_errors_and_headers(
    make_sidecar: SidecarFactory,
) -> None:
    async with make_sidecar(route_limits(requestsPerMinute=1, tokensPerMinute=100000)) as sc:
        claude = anthropic.AsyncAnthropic(
            base_url=sc.base_url.removesuffix("/v1"), api_key="unused", max_retries=0
        )
        message: anthropic.types.MessageParam = {"role": "user", "content": "hello"}
        raw = await claude.messages.with_raw_response.create(
            model="auto", max_tokens=50, messages=[message]
        )
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "1"
        assert raw.headers["anthropic-ratelimit-tokens-limit"] == "100000"
        assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert "x-ratelimit-limit-requests" not in raw.headers
        with pytest.raises(anthropic.RateLimitError) as info:
            await claude.messages.create(model="auto", max_tokens=50, messages=[message])
        assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        headers = info.value.response.headers
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert int(headers["retry-after"]) >= 1


async def test_every_model_endpoint_counts(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar(route_limits(requestsPerMinute=3)) as sc:
        client = client_for(sc)
        await client.embeddings.create(model="auto", input="hello")
        await client.responses.create(model="auto", input="hello")
        stream = await client.chat.completions.create(model="auto", messages=USER, stream=True)
        async for _ in stream:
            pass
        for call in (
            lambda: client.embeddings.create(model="auto", input="hello"),
            lambda: client.responses.create(model="auto", input="hello"),
            lambda: client.chat.completions.create(model="auto", messages=USER),
        ):
            with pytest.raises(openai.RateLimitError):
                await call()


def budget_limits(doc: dict[str, Any]) -> None:
    doc["budgets"] = [
        {
            "name": "ds",
            "provider": "dashscope",
            "limitUSD": "100",
            "rateLimits": {"requestsPerMinute": 1},
        }
    ]


async def test_a_budget_limit_passes_its_provider_over_and_the_fallback_answers(
    make_sidecar: SidecarFactory,
) -> None:
    batch = {"X-Aegis-Batch-Size": "20"}  # the batch rule goes to dashscope
    async with make_sidecar(budget_limits) as sc:
        client = client_for(sc)
        first = await client.chat.completions.with_raw_response.create(
            model="auto", messages=USER, extra_headers=batch
        )
        assert first.headers["x-aegis-provider"] == "dashscope"
        second = await client.chat.completions.with_raw_response.create(
            model="auto", messages=USER, extra_headers=batch
        )
        assert second.headers["x-aegis-provider"] == "local"
        assert second.headers["x-aegis-fallback"] == "dashscope:rate_limited"
        assert second.headers["x-ratelimit-remaining-requests"] == "0"


async def test_a_budget_limit_with_nothing_else_to_serve_is_a_429(
    make_sidecar: SidecarFactory,
) -> None:
    def only_dashscope(doc: dict[str, Any]) -> None:
        budget_limits(doc)
        doc["fallback"] = []
        doc["privacy"] = {"localOnly": []}

    batch = {"X-Aegis-Batch-Size": "20"}
    async with make_sidecar(only_dashscope) as sc:
        client = client_for(sc)
        await client.chat.completions.create(model="auto", messages=USER, extra_headers=batch)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="auto", messages=USER, extra_headers=batch)
        assert "budget tests/ds on requests" in info.value.message
        assert info.value.response.headers["x-ratelimit-limit-requests"] == "1"
