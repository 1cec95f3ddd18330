"""Budgets, privacy and upstream failures through the running sidecar."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from aegis.sidecar.ledger.report import iter_entries
from tests.sidecar.conftest import Fakes, SidecarFactory, client_for
from tests.sidecar.shared_helpers import poll_until

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]
BATCH = {"X-Aegis-Batch-Size": "20"}


async def rows_of(url: str) -> list[dict[str, Any]]:
    return [row async for row in iter_entries(url)]


def with_budget(limit: str, on_exceeded: str = "FallbackLocal") -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["budgets"] = [
            {
                "name": "ds",
                "provider": "dashscope",
                "limitUSD": limit,
                "onExceeded": on_exceeded,
            }
        ]

    return edit


async def test_200_concurrent_requests_never_overspend(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    """Each request reserves max_tokens x price; the budget covers only some of them."""
    # a slow upstream keeps many reservations outstanding at once
    fakes.dashscope.set_knobs(latency_ms=50, reply=" ".join(["w"] * 40))
    limit = Decimal("0.002")
    async with make_sidecar(with_budget(str(limit))) as sc:
        client = client_for(sc)

        async def one(i: int) -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="auto",
                messages=[{"role": "user", "content": f"ticket {i}"}],
                max_tokens=100,
                extra_headers=BATCH,
            )
            return raw.headers["x-aegis-provider"]

        providers = await asyncio.gather(*(one(i) for i in range(200)))
        assert sc.runtime.budgets.outstanding == 0
        await sc.runtime.ledger.flush()
        rows = await rows_of(sc.runtime.ledger_url)
    paid = [r for r in rows if r["provider"] == "dashscope"]
    spent = sum((Decimal(r["cost_usd"]) for r in paid), Decimal(0))
    assert len(rows) == 200
    assert providers.count("dashscope") == len(paid) > 0
    assert providers.count("local") > 0, "the budget must have run out"
    assert spent <= limit
    (snapshot,) = sc.runtime.budgets.snapshot()
    assert snapshot.spent == spent  # ledger total = sum of settled costs
    assert all(r["fallback_reason"] == "dashscope:budget" for r in rows if r["provider"] == "local")


async def test_reject_budget_answers_429_naming_the_budget(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar(with_budget("0.000001", "Reject")) as sc:
        with pytest.raises(openai.RateLimitError) as info:
            await client_for(sc).chat.completions.create(
                model="auto", messages=USER, extra_headers=BATCH
            )
        assert info.value.code == "budget_exceeded"
        assert "'ds'" in info.value.message


async def test_local_only_class_never_goes_to_cloud_even_when_local_is_down(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    fakes.ollama.set_knobs(fail_next=1000, fail_status=503)
    async with make_sidecar() as sc:
        client = client_for(sc)
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model="openai/gpt-4o",
                messages=[{"role": "user", "content": "mail jane@example.org the results"}],
                extra_headers={"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"},
            )
        assert info.value.status_code == 503
        # a non-sensitive request still falls back to the cloud
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=USER)
        assert raw.headers["x-aegis-provider"] == "dashscope"
        assert raw.headers["x-aegis-fallback"] == "local:status_503"
    assert fakes.openai.requests == []
    assert len(fakes.dashscope.requests) == 1


async def test_failures_fall_back_then_all_down_is_502(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    fakes.dashscope.set_knobs(fail_next=1, fail_status=500)
    async with make_sidecar() as sc:
        client = client_for(sc)
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=USER, extra_headers=BATCH
        )
        assert raw.headers["x-aegis-provider"] == "local"
        assert raw.headers["x-aegis-fallback"] == "dashscope:status_500"
        fakes.dashscope.set_knobs(fail_next=10, fail_status=502)
        fakes.ollama.set_knobs(fail_next=10, fail_status=500)
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="auto", messages=USER, extra_headers=BATCH)
        assert info.value.status_code == 502
        assert info.value.code == "upstream_error"
        assert "dashscope:status_502" in info.value.message
        assert "local:status_500" in info.value.message


async def test_client_disconnect_cancels_upstream_and_settles(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    fakes.dashscope.set_knobs(latency_ms=5000)
    async with make_sidecar(with_budget("10")) as sc:
        body = {"model": "auto", "messages": USER, "max_tokens": 50}
        async with aiohttp.ClientSession() as http:
            with pytest.raises(TimeoutError):
                await http.post(
                    sc.base_url + "/chat/completions",
                    json=body,
                    headers=BATCH,
                    timeout=aiohttp.ClientTimeout(total=0.3),
                )
        await sc.runtime.ledger.flush()

        async def cancelled_row() -> list[dict[str, Any]]:
            await sc.runtime.ledger.flush()
            return [r for r in await rows_of(sc.runtime.ledger_url) if r["status"] == "cancelled"]

        rows: list[dict[str, Any]] = []

        async def noticed() -> bool:  # the server notices the hang-up asynchronously
            rows[:] = await cancelled_row()
            return bool(rows)

        await poll_until(noticed)
        assert len(rows) == 1 and rows[0]["provider"] == "dashscope"
        assert sc.runtime.budgets.outstanding == 0
        (snapshot,) = sc.runtime.budgets.snapshot()
        assert snapshot.reserved == 0
        assert snapshot.spent == Decimal(rows[0]["cost_usd"]) > 0


async def test_stream_client_disconnect_settles_partial_and_records_cancelled(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    fakes.dashscope.set_knobs(chunk_delay_ms=200)
    async with make_sidecar(with_budget("10")) as sc:
        body = {"model": "auto", "messages": USER, "max_tokens": 50, "stream": True}
        async with (
            aiohttp.ClientSession() as http,
            http.post(sc.base_url + "/chat/completions", json=body, headers=BATCH) as resp,
        ):
            assert resp.status == 200
            first = await resp.content.readuntil(b"\n\n")
            assert first.startswith(b"data: ")
            resp.close()  # hang up mid-stream

        rows: list[dict[str, Any]] = []

        async def noticed() -> bool:  # the server notices the hang-up at its next write
            await sc.runtime.ledger.flush()
            rows[:] = [
                r for r in await rows_of(sc.runtime.ledger_url) if r["status"] == "cancelled"
            ]
            return bool(rows)

        await poll_until(noticed)
        assert len(rows) == 1
        assert rows[0]["provider"] == "dashscope" and rows[0]["ttft_ms"] is not None
        assert sc.runtime.budgets.outstanding == 0
        (snapshot,) = sc.runtime.budgets.snapshot()
        # charged: the prompt bound plus one token per forwarded chunk, below the worst case
        assert Decimal(0) < snapshot.spent == Decimal(rows[0]["cost_usd"])
        assert snapshot.reserved == 0
