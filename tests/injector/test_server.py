"""The admission endpoints in-process: wire format, errors, readiness, metrics."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aegis.operator.injector import certs
from aegis.operator.injector.cache import StaticRoutes
from aegis.operator.injector.tls import ServingTls
from aegis.operator.injector.webhook import Injector, build_app, build_metrics_app
from tests.bench.injector_admission import review_body
from tests.controlplane.procs import bound_socket
from tests.injector.helpers import SIDECAR, apply, route
from tests.injector.test_certs import POLICY

ROUTES = StaticRoutes([route("rag-api", "shop", {"matchLabels": {"app": "rag-api"}})])


def make_injector(ready: bool = True) -> Injector:
    return Injector(
        ROUTES, SIDECAR, native=True, never_injected=frozenset({"kube-system"}),
        ready=lambda: ready, version="1.2.3",
    )  # fmt: skip


def test_benchmark_review_is_injected() -> None:
    """The benchmark measures the full injection path, not a cheap skip or refusal."""
    body = review_body()
    status, answer = make_injector().answer(body, "pod")
    review = json.loads(body)
    assert status == 200
    response: dict[str, Any] = answer["response"]  # type: ignore[assignment]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patched = apply(review["request"]["object"], json.loads(base64.b64decode(response["patch"])))
    assert patched["spec"]["initContainers"][0]["name"] == "aegis-sidecar"
    assert response["auditAnnotations"] == {"route": "rag-api"}


def test_refusal_carries_status_message() -> None:
    review = json.loads(review_body())
    review["request"]["object"]["metadata"]["labels"]["app"] = "unknown"
    status, answer = make_injector().answer(json.dumps(review).encode(), "pod")
    response: dict[str, Any] = answer["response"]  # type: ignore[assignment]
    assert status == 200 and response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"].startswith("Aegis sidecar injection refused: pod ")
    assert "rag-api-7d9f8b6c5-*" in response["status"]["message"]  # generateName shown


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", json.dumps({"kind": "AdmissionReview", "apiVersion": "v1beta1"}).encode()],
)
def test_malformed_reviews_get_400(body: bytes) -> None:
    status, answer = make_injector().answer(body, "pod")
    assert status == 400 and "AdmissionReview" in str(answer["error"])


def test_internal_errors_refuse_and_are_counted() -> None:
    class Broken:
        def routes(self, namespace: str) -> list[Any]:
            raise RuntimeError("boom")

    injector = Injector(Broken(), SIDECAR, native=True, never_injected=frozenset())
    _, answer = injector.answer(review_body(), "pod")
    response: dict[str, Any] = answer["response"]  # type: ignore[assignment]
    assert response["allowed"] is False
    assert "internal error" in response["status"]["message"]
    assert injector.metrics.admissions.labels("refused", "error")._value.get() == 1


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, str, ServingTls]]:
    """The admission and metrics apps; ready, as in production, once a serving
    certificate is loaded (the route source here is static, so always synced)."""
    serving = ServingTls()
    injector = Injector(
        ROUTES, SIDECAR, native=True, never_injected=frozenset({"kube-system"}),
        ready=serving.loaded.is_set, version="1.2.3",
    )  # fmt: skip
    runners = []
    urls = []
    for app in (build_app(injector), build_metrics_app(injector)):
        runner = web.AppRunner(app)
        await runner.setup()
        sock = bound_socket()
        await web.SockSite(runner, sock).start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{sock.getsockname()[1]}")
    try:
        yield urls[0], urls[1], serving
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_endpoints_readiness_and_metrics(served: tuple[str, str, ServingTls]) -> None:
    api, metrics, serving = served
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{metrics}/readyz") as response:
            assert response.status == 503
        pair, _ = certs.plan(None, POLICY, datetime.datetime.now(datetime.UTC))
        serving.load(pair.tls_cert, pair.tls_key)  # the certificate arrives: ready
        async with http.get(f"{metrics}/readyz") as response:
            assert response.status == 200
        async with http.get(f"{api}/healthz") as response:
            assert response.status == 200
        async with http.post(f"{api}/inject/namespace", data=review_body()) as response:
            assert (await response.json())["response"]["patchType"] == "JSONPatch"
        review = json.loads(review_body())
        review["request"]["object"]["metadata"]["labels"]["aegis.io/inject"] = "false"
        async with http.post(f"{api}/inject/namespace", json=review) as response:
            assert "patch" not in (await response.json())["response"]
        async with http.get(f"{metrics}/metrics") as response:
            text = await response.text()
    assert 'aegis_injector_admissions_total{outcome="injected",reason="injected"} 1.0' in text
    assert 'aegis_injector_admissions_total{outcome="skipped",reason="opt-out"} 1.0' in text
    assert 'aegis_injector_admissions_total{outcome="refused",reason="no-route"} 0.0' in text
    assert "aegis_injector_admission_duration_seconds_count 2.0" in text
