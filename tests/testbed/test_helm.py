"""helm renders and installs a chart into the test API server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.controlplane.kube import Kube

pytestmark = pytest.mark.kube

CHART = Path(__file__).parent / "charts" / "tiny"


def test_helm_template_renders_offline(kube: Kube) -> None:
    rendered = kube.helm("template", "demo", str(CHART), "--set", "greeting=hi").stdout
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(rendered) if doc}
    assert set(docs) == {"ConfigMap", "ServiceAccount"}
    assert docs["ConfigMap"]["metadata"]["name"] == "demo-tiny"
    assert docs["ConfigMap"]["data"]["greeting"] == "hi"


def test_helm_install_and_uninstall(kube: Kube, namespace: str) -> None:
    kube.helm("install", "demo", str(CHART), "-n", namespace, "--set", "greeting=installed")

    releases = json.loads(kube.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]
    config = kube.kubectl_json("get", "configmap", "demo-tiny", "-n", namespace)
    assert config["data"]["greeting"] == "installed"
    # Capabilities come from the live API server at install time, not helm's default.
    assert config["data"]["kubeVersion"] == kube.version
    kube.kubectl("get", "serviceaccount", "demo-tiny", "-n", namespace)

    kube.helm("uninstall", "demo", "-n", namespace)
    gone = kube.kubectl("get", "configmap", "demo-tiny", "-n", namespace, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr
