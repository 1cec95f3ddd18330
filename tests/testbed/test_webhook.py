"""A mutating webhook on https://127.0.0.1:<port> is called by the API server for pod CREATE.

This is the path the sidecar injector takes: TLS with an IP SAN signed by the test
CA, that CA as caBundle, a JSONPatch in the AdmissionReview response.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.controlplane.kube import Kube
from tests.controlplane.procs import bound_socket

pytestmark = pytest.mark.kube

LABEL = "testbed.aegis.io/mutated"
REVIEWS = web.AppKey("reviews", list[dict[str, Any]])


@dataclass
class Webhook:
    """A running webhook server: its URL and every AdmissionReview it received."""

    url: str
    reviews: list[dict[str, Any]]


async def mutate(request: web.Request) -> web.Response:
    """Allow the pod, adding LABEL with a JSONPatch (as the sidecar injector will)."""
    review: dict[str, Any] = await request.json()
    request.app[REVIEWS].append(review)
    pod = review["request"]["object"]
    patch: list[dict[str, Any]]
    if pod["metadata"].get("labels"):
        escaped = LABEL.replace("/", "~1")  # JSON Pointer escaping
        patch = [{"op": "add", "path": f"/metadata/labels/{escaped}", "value": "yes"}]
    else:
        patch = [{"op": "add", "path": "/metadata/labels", "value": {LABEL: "yes"}}]
    response = {
        "uid": review["request"]["uid"],
        "allowed": True,
        "patchType": "JSONPatch",
        "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
    }
    return web.json_response(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
    )


@pytest.fixture
async def webhook(kube: Kube, tmp_path: Path) -> AsyncIterator[Webhook]:
    app = web.Application()
    app[REVIEWS] = []
    app.router.add_post("/mutate", mutate)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = kube.ca.serving_cert(kube.webhook_host).server_ssl_context(tmp_path)
    bind = "127.0.0.1" if kube.webhook_host == "127.0.0.1" else "0.0.0.0"
    sock = bound_socket(bind)  # bound before it is named: no other process can take it
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock, ssl_context=tls).start()
    try:
        yield Webhook(f"https://{kube.webhook_host}:{port}/mutate", app[REVIEWS])
    finally:
        await runner.cleanup()


def pod(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
        }
    )


async def test_mutating_webhook_labels_created_pod(
    kube: Kube, namespace: str, webhook: Webhook
) -> None:
    name = f"testbed-label-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "label.testbed.aegis.io",
                "clientConfig": {"url": webhook.url, "caBundle": kube.ca_bundle},
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
                # Only this test's namespace: other tests' pods never reach this webhook.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
            }
        ],
    }
    # kubectl blocks, and the API server calls back into this event loop: use threads.
    await asyncio.to_thread(kube.apply, config)
    try:
        # The API server picks the configuration up asynchronously; poll with dry runs.
        deadline = time.monotonic() + 30
        while True:
            dry = await asyncio.to_thread(
                kube.kubectl_json, "create", "-n", namespace, "--dry-run=server", "-f", "-",
                input=pod("probe"),
            )  # fmt: skip
            if LABEL in dry["metadata"]["labels"]:
                break
            assert time.monotonic() < deadline, "webhook configuration never took effect"
            await asyncio.sleep(0.2)  # poll interval; the deadline is asserted above

        created = await asyncio.to_thread(
            kube.kubectl_json, "create", "-n", namespace, "-f", "-", input=pod("web")
        )
        assert created["metadata"]["labels"] == {"app": "web", LABEL: "yes"}
        stored = await asyncio.to_thread(kube.kubectl_json, "get", "pod", "web", "-n", namespace)
        assert stored["metadata"]["labels"][LABEL] == "yes"
        seen = [r["request"] for r in webhook.reviews if r["request"]["name"] == "web"]
        assert [(r["operation"], r["dryRun"], r["namespace"]) for r in seen] == [
            ("CREATE", False, namespace)
        ]
    finally:
        await asyncio.to_thread(
            kube.kubectl, "delete", "mutatingwebhookconfiguration", name, "--ignore-not-found"
        )
