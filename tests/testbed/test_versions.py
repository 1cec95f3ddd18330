"""The control plane runs the pinned releases, and the builder's cache check is quick."""

from __future__ import annotations

import time

import pytest

from tests.controlplane import build, versions
from tests.controlplane.kube import Kube

pytestmark = pytest.mark.kube


def test_server_runs_the_pinned_release(kube: Kube) -> None:
    if kube.external:
        assert kube.version.startswith("v1.")
    else:
        assert kube.version == versions.KUBERNETES


def test_cached_build_is_a_quick_no_op(kube: Kube) -> None:
    if kube.external:
        pytest.skip("an existing cluster (AEGIS_TEST_KUBECONFIG) does not use the builder")
    started = time.monotonic()
    testbin = build.ensure(log=lambda line: pytest.fail(f"ensure() rebuilt: {line}"))
    assert time.monotonic() - started < 10
    lines = testbin.version_lines()
    assert lines["kube-apiserver"] == f"Kubernetes {versions.KUBERNETES}"
    assert lines["etcd"] == f"etcd Version: {versions.ETCD.lstrip('v')}"
    assert lines["helm"].startswith(versions.HELM)
