"""Fixtures of the attack suite: the CRDs, and the chart's admission policies applied
to the real API server for this package's namespaces only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.controlplane.kube import Kube
from tests.controlplane.procs import wait_until
from tests.operator.lifecycle import installed_crds

CHART = Path(__file__).resolve().parents[2] / "helm" / "aegis"
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
SCOPE_LABEL = "test.aegis.io/security"


@pytest.fixture(scope="package")
def crds(kube: Kube) -> Iterator[None]:
    yield from installed_crds(kube)


def render(kube: Kube, release: str, namespace: str, *values: str) -> list[dict[str, object]]:
    """The chart's objects as ``helm template`` renders them with ``values``."""
    sets = [arg for value in values for arg in ("--set", value)]
    out = kube.helm("template", release, str(CHART), "-n", namespace, *sets).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="package")
def release_namespace(kube: Kube) -> Iterator[str]:
    """Where the chart is "installed" (its ServiceAccounts live here)."""
    name = kube.create_namespace("aegis-sec")
    yield name
    kube.delete_namespace(name)


@pytest.fixture(scope="package")
def scope() -> str:
    """This run's label value, and the suffix of its release names."""
    return uuid.uuid4().hex[:8]


def apply_policies(
    kube: Kube, release: str, namespace: str, scope: str, *values: str
) -> list[dict[str, object]]:
    """Apply the chart's admission policies (of ``release``), bound for namespaces
    labelled with ``scope`` only; wait until they are enforced; return them."""
    objects = [d for d in render(kube, release, namespace, *values) if d["kind"] in POLICY_KINDS]
    for obj in objects:
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            spec = obj["spec"]
            assert isinstance(spec, dict)
            spec["matchResources"] = {"namespaceSelector": {"matchLabels": {SCOPE_LABEL: scope}}}
        kube.apply(obj)
    _wait_enforced(kube, scope, bool(objects))
    return objects


def delete_objects(kube: Kube, objects: list[dict[str, object]]) -> None:
    for obj in reversed(objects):
        meta = obj["metadata"]
        assert isinstance(meta, dict)
        ns = ["-n", str(meta["namespace"])] if "namespace" in meta else []
        kube.kubectl("delete", str(obj["kind"]), str(meta["name"]), *ns, "--ignore-not-found")


@pytest.fixture(scope="package")
def policies(kube: Kube, crds: None, release_namespace: str, scope: str) -> Iterator[str]:
    """Every ValidatingAdmissionPolicy of the chart (default values, release
    ``sec-<scope>``), bound for namespaces labelled with this run's scope only, so the
    other packages of the session are not affected. Yields the label value."""
    objects = apply_policies(kube, f"sec-{scope}", release_namespace, scope)
    yield scope
    delete_objects(kube, objects)


def _wait_enforced(kube: Kube, scope: str, any_policy: bool) -> None:
    """The API server loads policies asynchronously: wait until a route the defaults
    refuse is refused (a server-side dry run in a scoped namespace)."""
    probe = kube.create_namespace("aegis-sec-probe")
    kube.kubectl("label", "namespace", probe, f"{SCOPE_LABEL}={scope}")
    bad = {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "probe"},
        "spec": {
            "providers": [{"name": "local", "type": "ollama", "models": {"default": "m"}}],
            "default": {"provider": "local"},
            "privacy": {"detect": False},
        },
    }

    def refused() -> bool:
        done = kube.kubectl(
            "create", "-n", probe, "--dry-run=server", "-f", "-",
            input=json.dumps(bad), check=False,
        )  # fmt: skip
        return done.returncode != 0

    try:
        if any_policy:  # a chart without policies has nothing to wait for
            wait_until(refused, timeout=30, what="the chart's route policy to be enforced")
    finally:
        kube.delete_namespace(probe)


@pytest.fixture
def scoped(kube: Kube, namespace: str, policies: str) -> str:
    """A fresh namespace the chart's policies apply to."""
    kube.kubectl("label", "namespace", namespace, f"{SCOPE_LABEL}={policies}")
    return namespace
