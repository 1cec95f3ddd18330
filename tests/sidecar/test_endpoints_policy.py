"""Every route of the sidecar's app, enumerated from its router: the ones that call a
model go through privacy and budgets whatever API they speak, the others call none."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from aegis.sidecar.http import MODEL_ROUTES, RunningSidecar, build_app
from aegis.sidecar.ledger.report import iter_entries
from tests.sidecar.conftest import Fakes, SidecarFactory
from tests.sidecar.shared_helpers import sample as metric_value

CRITICAL = {"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"}  # -> openai
SECRET = "Write to jane.doe@example.org about the refund"


def chat(text: str, stream: bool) -> dict[str, Any]:
    return {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": text}]}


def embeddings(text: str, stream: bool) -> dict[str, Any]:
    return {"model": "auto", "input": [text]}


def responses(text: str, stream: bool) -> dict[str, Any]:
    return {"model": "auto", "stream": stream, "input": [{"role": "user", "content": text}]}


def messages(text: str, stream: bool) -> dict[str, Any]:
    return {
        "model": "auto",
        "max_tokens": 32,
        "stream": stream,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


# A request body for every route that takes one; a new POST route fails the test
# below until it is given one here (and so is checked for privacy and budgets).
SAMPLES: dict[str, Callable[[str, bool], dict[str, Any]]] = {
    "/v1/chat/completions": chat,
    "/v1/embeddings": embeddings,
    "/v1/responses": responses,
    "/v1/messages": messages,
}
STREAMING = {"/v1/chat/completions", "/v1/responses", "/v1/messages"}
CASES = [(path, False) for path in SAMPLES] + [
    (path, True) for path in SAMPLES if path in STREAMING
]
CATCH_ALL = "/{tail}"


def calls(fakes: Fakes) -> int:
    return sum(len(f.requests) for f in (fakes.openai, fakes.dashscope, fakes.ollama))


async def scrape(sc: RunningSidecar, http: aiohttp.ClientSession) -> str:
    async with http.get(f"http://127.0.0.1:{sc.metrics_port}/metrics") as resp:
        return await resp.text()


def routes_of(sc: RunningSidecar) -> set[tuple[str, str]]:
    app = build_app(sc.runtime)
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }


async def test_every_route_is_known_and_only_model_routes_call_a_model(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        root = sc.base_url.removesuffix("/v1")
        routes = routes_of(sc)
        posts = {path for method, path in routes if method == "POST"}
        assert posts == set(SAMPLES), "every route with a body needs a sample here"
        assert posts == set(MODEL_ROUTES)
        for method, path in sorted(routes):
            if path == CATCH_ALL or method == "POST":
                continue
            before = calls(fakes)
            async with http.request(method, root + path) as resp:
                assert resp.status in (200, 503), (method, path)
            assert calls(fakes) == before, f"{method} {path} called a model"
        for path, sample in SAMPLES.items():
            before = calls(fakes)
            async with http.post(root + path, json=sample("hello", False)) as resp:
                assert resp.status == 200, await resp.text()
            assert calls(fakes) == before + 1, f"POST {path} should call one model"
        metrics = await scrape(sc, http)
        for path, api in MODEL_ROUTES.items():
            assert metric_value(metrics, "aegis_api_requests_total", api=api, status="200") == 1, (
                path
            )


@pytest.mark.parametrize(("path", "stream"), CASES)
async def test_detected_pii_stays_local_on_every_endpoint(
    make_sidecar: SidecarFactory, fakes: Fakes, path: str, stream: bool
) -> None:
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        url = sc.base_url.removesuffix("/v1") + path
        async with http.post(url, json=SAMPLES[path](SECRET, stream), headers=CRITICAL) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()
            assert resp.headers["X-Aegis-Provider"] == "local"
            assert resp.headers["X-Aegis-Data-Class"] == "pii"
            assert resp.headers["X-Aegis-Rule"] == "sensitive"
        declared = {**CRITICAL, "X-Aegis-Data-Class": "hipaa"}
        async with http.post(url, json=SAMPLES[path]("hello", stream), headers=declared) as resp:
            assert resp.status == 200
            assert resp.headers["X-Aegis-Provider"] == "local"
    assert fakes.openai.requests == [] and fakes.dashscope.requests == []
    assert len(fakes.ollama.requests) == 2


@pytest.mark.parametrize(("path", "stream"), CASES)
async def test_a_reject_budget_refuses_on_every_endpoint(
    make_sidecar: SidecarFactory, fakes: Fakes, path: str, stream: bool
) -> None:

    def reject(doc: dict[str, Any]) -> None:
        doc["budgets"] = [
            {"name": "oai", "provider": "openai", "limitUSD": "0", "onExceeded": "Reject"}
        ]

    async with make_sidecar(reject) as sc, aiohttp.ClientSession() as http:
        url = sc.base_url.removesuffix("/v1") + path
        async with http.post(url, json=SAMPLES[path]("hello", stream), headers=CRITICAL) as resp:
            assert resp.status == 429
            assert resp.headers["Content-Type"].startswith("application/json")
            body = json.loads(await resp.read())
        if path == "/v1/messages":
            assert body["error"]["type"] == "rate_limit_error"
            assert "'oai'" in body["error"]["message"]
        else:
            assert body["error"]["code"] == "budget_exceeded"
            assert "'oai'" in body["error"]["message"]
        await sc.runtime.ledger.flush()
        rows = [r async for r in iter_entries(sc.runtime.ledger_url)]
        assert [(r["status"], r["http_status"]) for r in rows] == [("refused", 429)]
        api = MODEL_ROUTES[path]
        metrics = await scrape(sc, http)
        assert metric_value(metrics, "aegis_api_requests_total", api=api, status="429") == 1
    assert calls(fakes) == 0
