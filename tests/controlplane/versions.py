"""Pinned versions of the test bed's Go binaries and where they are cached.

The pins live in one place so that the builder, the fixtures and the report
header agree, and so that bumping a version lands in a fresh cache directory
instead of silently reusing binaries built from the old pins.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Kubernetes release for kube-apiserver, kubectl and the node binaries (kubelet,
#: kube-scheduler, kube-controller-manager, kube-proxy): module ``k8s.io/kubernetes``.
KUBERNETES = "v1.34.4"
#: etcd release (module ``go.etcd.io/etcd/server/v3``); Kubernetes 1.34 ships with etcd 3.6.
ETCD = "v3.6.16"
#: Helm v3 release; 3.19 is the line built against the Kubernetes 1.34 client libraries.
HELM = "v3.19.5"
#: CoreDNS release for the one-node cluster (module ``github.com/coredns/coredns``);
#: 1.15 is the first line whose go.mod asks for Go 1.26. Not part of the cache key:
#: binaries are reused only when ``coredns -version`` reports this release.
COREDNS = "v1.15.0"
#: OpenTelemetry Collector release for the tracing tests (``tests.controlplane.otelcol``):
#: the core modules at OTELCOL (receiver/otlpreceiver, exporter/otlphttpexporter,
#: otelcol) and their stable siblings at OTELCOL_STABLE (component, confmap, ...).
#: Its own cache directory, ``otelcol-<OTELCOL>-<digest>``, beside the Kubernetes one.
OTELCOL = "v0.165.0"
OTELCOL_STABLE = "v1.71.0"


def versions_key() -> str:
    """Name of the cache directory for exactly this set of pins."""
    return f"kube-{KUBERNETES}_etcd-{ETCD}_helm-{HELM}"


def testbin_root() -> Path:
    """Cache root, outside the repository: ``$AEGIS_TESTBIN_ROOT`` or ``~/.cache/aegis/testbin``."""
    configured = os.environ.get("AEGIS_TESTBIN_ROOT", "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "aegis" / "testbin"


def testbin_dir(root: Path | None = None) -> Path:
    """Directory holding the binaries for the current pins."""
    return (root or testbin_root()) / versions_key()
