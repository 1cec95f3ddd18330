"""The API server enforces CRD schemas and CEL rules, and serves the status subresource."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.kube import Kube

pytestmark = pytest.mark.kube

CRD = Path(__file__).parent / "manifests" / "widget-crd.yaml"
CRD_NAME = "widgets.testbed.aegis.io"


def widget(name: str, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "testbed.aegis.io/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"minReplicas": min_replicas, "maxReplicas": max_replicas},
    }


@pytest.fixture
def widget_crd(kube: Kube) -> Iterator[str]:
    kube.kubectl("apply", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=30s")
    yield CRD_NAME
    kube.kubectl("delete", "-f", str(CRD), "--wait=false", "--ignore-not-found")


def test_cel_rule_accepts_valid_and_rejects_invalid(
    kube: Kube, widget_crd: str, namespace: str
) -> None:
    applied = kube.apply(widget("ok", 1, 3), namespace)
    assert applied["spec"] == {"minReplicas": 1, "maxReplicas": 3}

    refused = kube.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(widget("bad", 5, 2)), check=False
    )
    assert refused.returncode != 0
    assert "minReplicas must not exceed maxReplicas" in refused.stderr
    assert "bad" not in kube.kubectl("get", "widgets", "-n", namespace, "-o", "name").stdout


def test_status_subresource(kube: Kube, widget_crd: str, namespace: str) -> None:
    kube.apply(widget("w", 1, 2), namespace)
    patched = kube.kubectl_json(
        "patch", "widget", "w", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", '{"status": {"phase": "Ready"}}',
    )  # fmt: skip
    assert patched["status"] == {"phase": "Ready"}

    # With the status subresource on, writes to the main resource ignore .status.
    kube.kubectl(
        "patch", "widget", "w", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"maxReplicas": 4}, "status": {"phase": "Hacked"}}',
    )  # fmt: skip
    current = kube.kubectl_json("get", "widget", "w", "-n", namespace)
    assert current["spec"]["maxReplicas"] == 4
    assert current["status"] == {"phase": "Ready"}
