"""The one `helm install` of ``helm/aegis`` that the node tests share (session scope).

Values are the chart's defaults except what a one-node test bed needs or the tests
exercise:

* images imported into containerd (pull policy ``Never``): Aegis, and the ledger's
  PostgreSQL built from Debian's packages (:mod:`tests.cluster.postgres_image`);
* ``postgresql.enabled`` with persistence: its claim binds a hostPath
  PersistentVolume under the cluster's state directory (there is no StorageClass), so
  the database survives its pod (the outage test scales it to zero and back);
* ``operator.clusterWide`` (test namespaces come and go), short budget and resync
  intervals;
* ``monitoring.podMonitor.enabled``: sidecars expose their metrics on the pod network
  (the PodMonitor's CRD, as the Prometheus Operator would install it, is applied first);
* ``routePolicy``: the fake upstreams are in-cluster Services standing in for OpenAI and
  DashScope, so the platform allows those hosts for those types (and ``openai`` may be
  local: ``test_aegis`` uses it as a self-hosted model);
* ``tracing``: on, sending to the session's OpenTelemetry Collector on the host
  (``conftest.traces``), so the operator and every injected sidecar export spans.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.images import Images
from tests.cluster.layout import Layout
from tests.controlplane.kube import Kube

CHART = Path(__file__).resolve().parents[2] / "helm" / "aegis"
RELEASE, RELEASE_NS = "aegis", "aegis-system"
POSTGRES_POD = f"{RELEASE}-postgresql-0"
POSTGRES_CLAIM = f"data-{POSTGRES_POD}"
POSTGRES_PV = "aegis-node-postgres"
POSTGRES_UID = 999
#: The fakes' hosts: ``fake-<kind>.<namespace>.svc.cluster.local``.
_IN_CLUSTER = r"^http://fake-{kind}\.[-a-z0-9]+\.svc\.cluster\.local{path}$"

PODMONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "podmonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "PodMonitor",
            "listKind": "PodMonitorList",
            "plural": "podmonitors",
            "singular": "podmonitor",
        },
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


#: Marks the tests' release: one a person installed on a `make cluster` is never replaced.
MARK = {"test.aegis.io/node-e2e": "true"}


def values(images: Images, tracing_endpoint: str) -> dict[str, Any]:
    aegis, postgres = images.aegis, images.postgres
    return {
        "commonLabels": MARK,
        "image": {"repository": aegis.repository, "tag": aegis.tag, "pullPolicy": "Never"},
        "postgresql": {
            "enabled": True,
            "image": {
                "repository": postgres.repository,
                "tag": postgres.tag,
                "pullPolicy": "Never",
            },
            "persistence": {"enabled": True, "size": "1Gi"},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        },
        "operator": {
            "clusterWide": True,
            "resyncInterval": 30,
            "budgetInterval": 5,
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        },
        "injector": {"resources": {"requests": {"cpu": "20m", "memory": "64Mi"}}},
        "monitoring": {"podMonitor": {"enabled": True}},
        "routePolicy": {
            "baseURLs": {
                "openai": [_IN_CLUSTER.format(kind="openai", path="/v1")],
                "dashscope": [_IN_CLUSTER.format(kind="dashscope", path="/compatible-mode/v1")],
            },
            "localTypes": ["ollama", "openai-compatible", "openai"],
        },
        "tracing": {"enabled": True, "endpoint": tracing_endpoint},
    }


@dataclass
class Release:
    kube: Kube
    values_file: Path
    name: str = RELEASE
    namespace: str = RELEASE_NS

    def helm(self, *args: str, timeout: float = 420.0, check: bool = True) -> str:
        done = self.kube.helm(*args, "--namespace", self.namespace, timeout=timeout, check=check)
        return done.stdout

    def kubectl(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        done = self.kube.kubectl("-n", self.namespace, *args, timeout=timeout, check=check)
        return done.stdout

    def pods(self, component: str) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}"
        found = self.kube.kubectl_json("-n", self.namespace, "get", "pods", "-l", selector)
        return list(found["items"])

    def psql(self, sql: str) -> str:
        """`sql` as the ledger's owner, through psql in the PostgreSQL pod (its socket)."""
        return self.kubectl(
            "exec",
            POSTGRES_POD,
            "-c",
            "postgresql",
            "--",
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "aegis",
            "-d",
            "aegis",
            "-tAc",
            sql,
        ).strip()


def _postgres_volume(kube: Kube, layout: Layout) -> None:
    """A fresh hostPath PersistentVolume reserved for the chart's PostgreSQL claim."""
    kube.kubectl("-n", RELEASE_NS, "delete", "pvc", POSTGRES_CLAIM, "--ignore-not-found")
    kube.kubectl("delete", "pv", POSTGRES_PV, "--ignore-not-found", timeout=120)
    path = layout.dir / "volumes" / "postgres"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    os.chown(path, POSTGRES_UID, POSTGRES_UID)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": POSTGRES_PV},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {"namespace": RELEASE_NS, "name": POSTGRES_CLAIM},
            },
        }
    )


def install(
    kube: Kube,
    images: Images,
    layout: Layout,
    workdir: Path,
    say: Callable[[str], None],
    *,
    tracing_endpoint: str,
) -> Release:
    """`helm install` (fresh: whatever an earlier session left is removed first)."""
    started = time.monotonic()
    found = kube.helm(
        "get", "values", RELEASE, "--namespace", RELEASE_NS, "-o", "json", check=False
    )
    if (
        found.returncode == 0
        and (json.loads(found.stdout or "{}") or {}).get("commonLabels") != MARK
    ):
        raise AssertionError(
            f"helm release {RELEASE} in {RELEASE_NS} was not installed by these tests: "
            "uninstall it (or run the node tests on a cluster of their own)"
        )
    kube.helm("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", check=False)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NS}})
    # A Secret an earlier test wrote by hand under the chart's name would block the
    # install (helm adopts nothing it did not create).
    kube.kubectl("-n", RELEASE_NS, "delete", "secret", f"{RELEASE}-ledger", "--ignore-not-found")
    _postgres_volume(kube, layout)
    kube.apply(PODMONITOR_CRD)
    kube.kubectl("wait", "--for=condition=Established", "crd/podmonitors.monitoring.coreos.com")
    values_file = workdir / "values.json"
    values_file.write_text(json.dumps(values(images, tracing_endpoint), indent=2))
    release = Release(kube, values_file)
    out = release.helm(
        "install",
        RELEASE,
        str(CHART),
        f"--values={values_file}",
        "--wait",
        "--wait-for-jobs",
        "--timeout=6m",
    )
    say(f"$ helm install {RELEASE} helm/aegis -n {RELEASE_NS} --values values.json --wait\n{out}")
    say(
        f"helm install took {time.monotonic() - started:.0f}s\n"
        + release.kubectl("get", "pods,statefulsets,services,pvc", "-o", "wide")
    )
    return release


def uninstall(release: Release) -> None:
    release.helm("uninstall", release.name, "--wait", check=False)
