"""helm install with every optional feature switched on, into the real kube-apiserver of
the test bed: stand-in CRDs for the Prometheus Operator's and cert-manager's kinds, and
every rendered object accepted (hooks skipped, as in test_install.py).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.kube import Kube
from tests.helm import sync
from tests.helm.chart import ALL_FEATURES
from tests.helm.release import CLUSTER_SCOPED, SCOPE_LABEL

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


# -- every optional feature, accepted by the API server ---------------------------------------
FOREIGN_CRDS = {
    "monitoring.coreos.com": ["PodMonitor", "ServiceMonitor", "PrometheusRule"],
    "cert-manager.io": ["Certificate", "Issuer"],
}


def minimal_crd(group: str, kind: str) -> dict[str, Any]:
    """A stand-in for the Prometheus Operator's / cert-manager's CRD (any spec accepted)."""
    plural = kind.lower() + ("es" if kind.endswith("s") else "s")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def test_install_with_every_optional_feature(kube: Kube, tmp_path: Path) -> None:
    crds = [minimal_crd(g, k) for g, kinds in FOREIGN_CRDS.items() for k in kinds]
    existing = {
        c["metadata"]["name"]
        for c in crds
        if kube.kubectl("get", "crd", c["metadata"]["name"], check=False).returncode == 0
    }
    for crd in crds:
        if crd["metadata"]["name"] not in existing:
            kube.apply(crd)
    names = [c["metadata"]["name"] for c in crds]
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *[f"crd/{n}" for n in names])  # fmt: skip
    name = f"aegis-all-{uuid.uuid4().hex[:6]}"
    namespace = kube.create_namespace("aegis-all")
    values = {
        **ALL_FEATURES,
        "crds": {"install": False},  # owned by the other release / kubectl
        "injector": {
            "namespaceSelectorExpressions": [
                {"key": SCOPE_LABEL, "operator": "In", "values": [name]}
            ]
        },
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    try:
        kube.helm("install", name, str(sync.CHART), "-n", namespace, "-f", str(path),
                  "--no-hooks")  # fmt: skip
        manifest = [
            d
            for d in yaml.safe_load_all(kube.helm("get", "manifest", name, "-n", namespace).stdout)
            if d
        ]
        kinds = {d["kind"] for d in manifest}
        assert {"PodMonitor", "ServiceMonitor", "PrometheusRule", "Certificate", "Issuer",
                "StatefulSet", "ConfigMap"} <= kinds  # fmt: skip
        for obj in manifest:
            ns = [] if obj["kind"] in CLUSTER_SCOPED else ["-n", namespace]
            kube.kubectl("get", obj["kind"], obj["metadata"]["name"], *ns)
        kube.helm("uninstall", name, "-n", namespace)
    finally:
        kube.helm("uninstall", name, "-n", namespace, "--ignore-not-found")
        kube.delete_namespace(namespace)
        for crd in names:
            if crd not in existing:
                kube.kubectl("delete", "crd", crd, "--ignore-not-found", "--wait=false")
