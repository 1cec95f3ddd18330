"""Hostile upstreams: a provider that answers garbage never crashes the sidecar,
never loses a ledger row and never leaves money reserved.

For each fault of the fake providers' knobs: the client gets a clear 502/504 in
its API's shape, or a stream that ends well formed (an error event once it has
started); the fallback chain runs while nothing has reached the client; exactly
one ledger row with the right status and a conservative cost; no reservation
left open; and no task or file descriptor left behind (checked after each case).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from aegis.sidecar.fakes import FakeUpstream
from aegis.sidecar.http.server import RunningSidecar
from aegis.sidecar.ledger.report import iter_entries
from tests.sidecar.conftest import Fakes, SidecarFactory
from tests.sidecar.shared_helpers import poll_until

BATCH = {"X-Aegis-Batch-Size": "20"}  # the batch rule: DashScope first, then local


def body(stream: bool = False) -> dict[str, Any]:
    return {
        "model": "auto",
        "max_tokens": 32,
        "stream": stream,
        "messages": [{"role": "user", "content": "tell me about the weather"}],
    }


def hostile_route(doc: dict[str, Any]) -> None:
    """DashScope with a budget and short timeouts, local behind it."""
    for provider in doc["providers"]:
        if provider["name"] == "dashscope":
            provider["timeoutSeconds"] = 0.5
    doc["budgets"] = [{"name": "ds", "provider": "dashscope", "limitUSD": "10"}]
    doc["listen"] = {"limits": {"requestTimeoutSeconds": 3, "maxUpstreamEventBytes": 1048576}}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.raw))

    def events(self) -> list[Any]:
        out: list[Any] = []
        for line in self.raw.decode().splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
        return out


async def call(
    sc: RunningSidecar, payload: dict[str, Any], path: str = "/chat/completions"
) -> Answer:
    async with (
        aiohttp.ClientSession() as session,
        session.post(sc.base_url + path, json=payload, headers=BATCH) as response,
    ):
        return Answer(response.status, dict(response.headers), await response.read())


async def rows(sc: RunningSidecar) -> list[dict[str, Any]]:
    await sc.runtime.ledger.flush()
    return [row async for row in iter_entries(sc.runtime.ledger_url)]


@pytest.fixture
async def hostile(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> AsyncIterator[tuple[RunningSidecar, Fakes, Callable[[], Any]]]:
    """A sidecar on the hostile route, warmed up (pooled connections exist), and a
    check to run after each case: no reservation, task or descriptor left."""
    async with make_sidecar(hostile_route) as sc:
        for stream in (False, True):
            assert (await call(sc, body(stream))).status == 200
        tasks, fds = len(asyncio.all_tasks()), open_fds()

        async def settled() -> None:
            assert sc.runtime.budgets.outstanding == 0
            await poll_until(lambda: len(asyncio.all_tasks()) <= tasks, within=10)
            # Pooled keep-alive connections to the two providers may come and go.
            await poll_until(lambda: open_fds() <= fds + 4, within=10)

        yield sc, fakes, settled


@dataclass(frozen=True)
class FallsBack:
    """A fault before anything reached the client: the local provider answers."""

    name: str
    knobs: dict[str, Any]
    stream: bool
    reason: str


DEEP: dict[str, Any] = {"nested_levels": 100_000}  # valid JSON, deeper than parsers go
FALLS_BACK = [
    FallsBack("not JSON", {"invalid_json": True}, False, "protocol"),
    FallsBack("200 with an error body", {"error_body_200": True}, False, "protocol"),
    FallsBack("stall before the answer", {"latency_ms": 5000}, False, "timeout"),
    FallsBack("slow drip", {"drip_bytes_per_second": 40}, False, "timeout"),
    FallsBack("stream error event first", {"error_body_200": True}, True, "protocol"),
    FallsBack("stream cut in its first event", {"cut_mid_event": 0}, True, "protocol"),
    FallsBack("a 10 MB SSE line", {"huge_event_bytes": 10_000_000}, True, "protocol"),
    FallsBack("JSON nested past the parser", DEEP | {"omit_usage": True}, False, "protocol"),
    FallsBack("stream stall before the first event", {"stall_after_chunks": 0}, True, "timeout"),
    FallsBack("stream slow drip", {"drip_bytes_per_second": 40}, True, "timeout"),
]


async def test_an_answer_nested_past_the_parser_is_a_502_in_a_translated_api(
    hostile: tuple[RunningSidecar, Fakes, Callable[[], Any]],
) -> None:
    """Its usage read without a parse, the answer is taken; translating it to the
    Responses API cannot read it: a 502 in that API's shape, not a 500. Streamed, the
    deep event is skipped and the stream ends well formed."""
    sc, fakes, settled = hostile
    fakes.dashscope.set_knobs(**DEEP)
    request = {"model": "auto", "input": "tell me about the weather", "max_output_tokens": 32}
    answer = await call(sc, request, "/responses")
    assert answer.status == 502, answer.raw[:300]
    assert answer.json()["error"]["code"] == "upstream_error"
    # A stream's event that deep is not a chunk: the translation passes over it.
    answer = await call(sc, {**request, "stream": True}, "/responses")
    assert answer.status == 200, answer.raw[:300]
    assert b"event: response.completed" in answer.raw
    await settled()


@pytest.mark.parametrize("case", FALLS_BACK, ids=[c.name for c in FALLS_BACK])
async def test_a_fault_before_the_first_byte_falls_back(
    hostile: tuple[RunningSidecar, Fakes, Callable[[], Any]], case: FallsBack
) -> None:
    sc, fakes, settled = hostile
    before = len(await rows(sc))
    fakes.dashscope.set_knobs(**case.knobs)
    answer = await call(sc, body(case.stream))
    assert answer.status == 200, answer.raw[:300]
    assert answer.headers["X-Aegis-Provider"] == "local"
    assert answer.headers["X-Aegis-Fallback"].startswith(f"dashscope:{case.reason}")
    if case.stream:
        assert answer.raw.rstrip().split(b"\n\n")[-2] == b"data: [DONE]"
    else:
        assert answer.json()["choices"][0]["message"]["content"]
    new = (await rows(sc))[before:]
    assert [(r["provider"], r["status"], r["http_status"]) for r in new] == [("local", "ok", 200)]
    assert new[0]["fallback_reason"].startswith(f"dashscope:{case.reason}")
    await settled()


async def test_everything_garbled_is_a_502_in_the_api_shape(
    hostile: tuple[RunningSidecar, Fakes, Callable[[], Any]],
) -> None:
    sc, fakes, settled = hostile
    before = len(await rows(sc))
    fakes.dashscope.set_knobs(invalid_json=True)
    fakes.ollama.set_knobs(error_body_200=True)
    answer = await call(sc, body())
    assert answer.status == 502
    error = answer.json()["error"]
    assert error["code"] == "upstream_error"
    assert "dashscope:protocol" in error["message"] and "local:protocol" in error["message"]
    new = (await rows(sc))[before:]
    assert [(r["status"], r["http_status"], Decimal(r["cost_usd"])) for r in new] == [
        ("error", 502, Decimal(0))
    ]
    await settled()


async def test_every_provider_stalling_is_a_504(
    hostile: tuple[RunningSidecar, Fakes, Callable[[], Any]],
) -> None:
    sc, fakes, settled = hostile
    fakes.dashscope.set_knobs(latency_ms=5000)
    fakes.ollama.set_knobs(latency_ms=5000)  # the deadline (3 s) cuts it
    answer = await call(sc, body())
    assert answer.status == 504
    assert answer.json()["error"]["code"] == "upstream_timeout"
    stalled = sc.runtime.metrics.registry.get_sample_value(
        "aegis_fallbacks_total", {"provider": "dashscope", "reason": "timeout"}
    )
    assert stalled == 1
    await settled()


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "12"},
        {"completion_tokens": -500},
        {"prompt_tokens": 12.5},
        {"completion_tokens": True},
        {"prompt_tokens": 10**40},
    ],
    ids=["string", "negative", "float", "bool", "huge"],
)
async def test_usage_that_is_not_a_count_is_charged_the_worst_case(
    hostile: tuple[RunningSidecar, Fakes, Callable[[], Any]], usage: dict[str, Any]
) -> None:
    sc, fakes, settled = hostile
    fair = await call(sc, body())
    fakes.dashscope.set_knobs(usage_override=usage)
    answer = await call(sc, body())
    assert answer.status == 200
    assert answer.headers["X-Aegis-Provider"] == "dashscope"
    fair_cost = Decimal(fair.headers["X-Aegis-Cost-USD"])
    charged = Decimal(answer.headers["X-Aegis-Cost-USD"])
    assert charged > fair_cost > 0  # the reservation's worst case, never less
    row = (await rows(sc))[-1]
    assert (row["status"], row["tokens_in"], row["tokens_out"]) == ("ok", 0, 0)
    assert Decimal(row["cost_usd"]) == charged
    await settled()


async def test_a_stream_without_its_usage_chunk_is_charged_the_worst_case(
    hostile: tuple[RunningSidecar, Fakes, Callable[[], Any]],
) -> None:
    sc, fakes, settled = hostile
    fakes.dashscope.set_knobs(omit_usage=True)
    answer = await call(sc, {**body(stream=True), "max_tokens": 4000})
    assert answer.status == 200
    assert b"data: [DONE]" in answer.raw
    row = (await rows(sc))[-1]
    assert (row["provider"], row["status"]) == ("dashscope", "ok")
    fakes.dashscope.set_knobs(omit_usage=False)
    fair = await call(sc, {**body(), "max_tokens": 4000})
    assert Decimal(row["cost_usd"]) > Decimal(fair.headers["X-Aegis-Cost-USD"])
    await settled()


@pytest.mark.parametrize(
    ("knobs", "http_status"),
    [
        ({"cut_mid_event": 3}, 502),
        ({"stall_after_chunks": 3}, 504),  # the provider's 0.5 s read timeout cuts it
        ({"huge_event_bytes": 0, "cut_after_chunks": 3}, 502),
    ],
    ids=["cut mid-event", "stall", "cut"],
)
async def test_a_stream_broken_after_it_started_ends_with_an_error_event(
    hostile: tuple[RunningSidecar, Fakes, Callable[[], Any]],
    knobs: dict[str, Any],
    http_status: int,
) -> None:
    sc, fakes, settled = hostile
    fakes.dashscope.set_knobs(reply="one two three four five six seven eight", **knobs)
    answer = await call(sc, body(stream=True))
    assert answer.status == 200  # committed before the break
    events = answer.events()
    assert events[0]["object"] == "chat.completion.chunk"
    assert events[-1]["error"]["code"] == "upstream_stream_interrupted"
    assert b"data: [DONE]" not in answer.raw
    row = (await rows(sc))[-1]
    assert (row["provider"], row["status"], row["http_status"]) == (
        "dashscope",
        "error",
        http_status,
    )
    assert Decimal(row["cost_usd"]) > 0  # what the provider may have billed
    await settled()


async def test_a_stream_past_the_deadline_ends_with_an_error_event(
    hostile: tuple[RunningSidecar, Fakes, Callable[[], Any]],
) -> None:
    sc, fakes, settled = hostile
    # Each chunk comes in time for the read timeout, the whole does not for the deadline.
    fakes.dashscope.set_knobs(reply=" ".join(["word"] * 30), chunk_delay_ms=300)
    answer = await call(sc, body(stream=True))
    assert answer.status == 200
    assert answer.events()[-1]["error"]["code"] == "upstream_stream_interrupted"
    row = (await rows(sc))[-1]
    assert (row["status"], row["http_status"]) == ("error", 504)
    await settled()


# -- the other APIs' shapes, and Anthropic's wire upstream ----------------------------


def with_anthropic(fake: FakeUpstream) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["providers"].append(
            {
                "name": "claude",
                "type": "anthropic",
                "baseURL": fake.base_url,
                "apiKeyEnv": "ANTHROPIC_API_KEY",
                "models": {"default": "claude-haiku-4-5"},
                "maxRetries": 0,
                "timeoutSeconds": 0.5,
            }
        )
        doc["default"] = {"provider": "claude"}
        doc["fallback"] = []
        doc["rules"] = []

    return edit


async def test_anthropic_upstream_faults_reach_a_messages_client_in_its_shape(
    make_sidecar: SidecarFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    request = {
        "model": "auto",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "hello there"}],
    }
    async with (
        FakeUpstream.start("anthropic") as claude,
        make_sidecar(with_anthropic(claude)) as sc,
    ):
        claude.set_knobs(invalid_json=True)
        answer = await call(sc, request, "/messages")
        assert answer.status == 502
        assert answer.json()["type"] == "error"
        assert answer.json()["error"]["type"] == "api_error"

        claude.set_knobs(invalid_json=False, usage_override={"input_tokens": "x"})
        answer = await call(sc, request, "/messages")
        assert answer.status == 200
        assert answer.json()["usage"]["input_tokens"] >= 0

        claude.set_knobs(usage_override=None, cut_mid_event=4)
        answer = await call(sc, {**request, "stream": True}, "/messages")
        assert answer.status == 200
        events = [e for e in answer.raw.decode().split("\n\n") if e and not e.startswith(":")]
        assert events[-1].startswith("event: error\ndata: ")
        assert json.loads(events[-1].split("data: ", 1)[1])["error"]["type"] == "api_error"
        assert sc.runtime.budgets.outstanding == 0
        statuses = [(r["status"], r["http_status"]) for r in await rows(sc)]
    assert statuses == [("error", 502), ("ok", 200), ("error", 502)]


async def test_responses_stream_cut_ends_with_response_failed(
    hostile: tuple[RunningSidecar, Fakes, Callable[[], Any]],
) -> None:
    sc, fakes, settled = hostile
    fakes.dashscope.set_knobs(reply="one two three four five six", cut_mid_event=3)
    request = {"model": "auto", "input": "hello there", "stream": True, "max_output_tokens": 32}
    answer = await call(sc, request, "/responses")
    assert answer.status == 200
    kinds = [e.get("type") for e in answer.events()]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.failed"
    await settled()


async def test_an_answer_over_the_upstream_body_bound_falls_back(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    def small_bound(doc: dict[str, Any]) -> None:
        hostile_route(doc)
        doc["listen"]["limits"]["maxUpstreamBodyBytes"] = 256 * 1024

    fakes.dashscope.set_knobs(reply=" ".join(["x" * 100_000] * 5))  # 500 kB
    async with make_sidecar(small_bound) as sc:
        answer = await call(sc, body())
        assert answer.status == 200
        assert answer.headers["X-Aegis-Provider"] == "local"
        assert answer.headers["X-Aegis-Fallback"] == "dashscope:protocol"
        assert sc.runtime.budgets.outstanding == 0
        assert [r["status"] for r in await rows(sc)] == ["ok"]
