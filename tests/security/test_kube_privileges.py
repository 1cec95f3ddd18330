"""What Aegis's ServiceAccounts may do on the real API server, as the chart binds them.

The chart's RBAC objects (and its admission policies, see conftest) are applied in two
modes: the default (the operator bound in ``operator.watchNamespaces`` only) and
``operator.clusterWide=true``. As each ServiceAccount's own token: no Secret outside
what the operator needs (its namespaces' ledger Secret, by name), no ConfigMap write
outside its own route ConfigMaps, and a ``kubectl auth can-i`` matrix for every
ServiceAccount in both modes, printed in the test log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.controlplane.kube import Kube, run_tool
from tests.helm.cluster import can_i, token_kubeconfig
from tests.security.conftest import SCOPE_LABEL, apply_policies, delete_objects, render

pytestmark = pytest.mark.kube

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


@dataclass
class Install:
    """The chart's RBAC in one mode: its ServiceAccounts' kubeconfigs."""

    mode: str
    release: str
    namespace: str  # the release namespace
    served: str  # an application namespace the operator serves
    other: str  # a namespace it does not serve (cluster-wide: served all the same)
    kubeconfigs: dict[str, Path]


def _install(
    kube: Kube,
    workdir: Path,
    *,
    mode: str,
    release: str,
    namespace: str,
    scope: str,
    served: str,
    other: str,
) -> tuple[Install, list[dict[str, object]]]:
    values = (
        ["operator.clusterWide=true"]
        if mode == "cluster-wide"
        else [f"operator.watchNamespaces={{{namespace},{served}}}"]
    )
    objects = [d for d in render(kube, release, namespace, *values) if d["kind"] in RBAC_KINDS]
    for obj in objects:
        kube.apply(obj)
    if mode == "cluster-wide":  # its own ServiceAccount: its own policies
        objects += apply_policies(kube, release, namespace, scope, *values)
    configs = {}
    for component in ("operator", "injector"):
        path = workdir / f"{release}-{component}.kubeconfig"
        token_kubeconfig(kube, namespace, f"{release}-aegis-{component}", path)
        configs[component] = path
    return Install(mode, release, namespace, served, other, configs), objects


@pytest.fixture(scope="module", params=["default", "cluster-wide"])
def install(
    request: pytest.FixtureRequest,
    kube: Kube,
    *,
    policies: str,
    release_namespace: str,
    scope: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Install]:
    mode = str(request.param)
    release = f"sec-{scope}" if mode == "default" else f"sec-{scope}-cw"
    served, other = kube.create_namespace("aegis-app"), kube.create_namespace("aegis-other")
    for ns in (served, other):
        kube.kubectl("label", "namespace", ns, f"{SCOPE_LABEL}={policies}")
    workdir = tmp_path_factory.mktemp(mode)
    found, objects = _install(
        kube, workdir, mode=mode, release=release, namespace=release_namespace,
        scope=policies, served=served, other=other,
    )  # fmt: skip
    yield found
    delete_objects(kube, objects)
    for ns in (served, other):
        kube.delete_namespace(ns)


def as_sa(kube: Kube, install: Install, component: str, *args: str, body: object = None) -> str:
    """kubectl as the ServiceAccount; its stderr when refused, '' when allowed."""
    config = install.kubeconfigs[component]
    done = run_tool(
        [kube.kubectl_bin, f"--kubeconfig={config}", *args],
        env={**kube.env, "KUBECONFIG": str(config)},
        input=None if body is None else json.dumps(body),
        check=False,
    )
    return "" if done.returncode == 0 else done.stderr


def configmap(name: str, *, ours: bool) -> dict[str, object]:
    labels = {"app.kubernetes.io/managed-by": "aegis-operator"} if ours else {}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"config.yaml": "overwritten"},
    }


def test_no_secret_is_read_outside_what_the_operator_needs(kube: Kube, install: Install) -> None:
    for ns in (install.served, install.other, "kube-system"):
        kube.kubectl(
            "create", "secret", "generic", "payroll", "-n", ns, "--from-literal=key=sk-victim",
            check=False,
        )  # fmt: skip
        refused = as_sa(kube, install, "operator", "get", "secret", "payroll", "-n", ns)
        assert "Forbidden" in refused, f"the operator read Secret {ns}/payroll ({install.mode})"
        refused = as_sa(kube, install, "operator", "get", "secrets", "-n", ns)
        assert "Forbidden" in refused, f"the operator listed Secrets in {ns}"
        assert "Forbidden" in as_sa(kube, install, "injector", "get", "secret", "payroll", "-n", ns)


def test_configmaps_are_written_only_when_they_are_the_operators_own(
    kube: Kube, install: Install
) -> None:
    ns = install.served
    kube.apply(configmap("app-settings", ours=False), ns)
    kube.apply(configmap("aegis-route-squatted", ours=False), ns)
    patch = ["patch", "configmap", "-n", ns, "--type=merge", "-p", '{"data": {"x": "y"}}']
    # Someone else's ConfigMaps: neither changed nor deleted, whatever their name.
    for name in ("app-settings", "aegis-route-squatted"):
        refused = as_sa(kube, install, "operator", *patch[:2], name, *patch[2:])
        assert "denied request" in refused or "Forbidden" in refused, (name, install.mode)
        refused = as_sa(kube, install, "operator", "delete", "configmap", name, "-n", ns)
        assert "denied request" in refused or "Forbidden" in refused, (name, install.mode)
    # A new one must be a route ConfigMap, labelled as the operator's.
    create = ["create", "-n", ns, "-f", "-"]
    refused = as_sa(kube, install, "operator", *create, body=configmap("evil", ours=True))
    assert "may only write its own route ConfigMaps" in refused, refused
    refused = as_sa(kube, install, "operator", *create, body=configmap("aegis-route-x", ours=False))
    assert "may only write its own route ConfigMaps" in refused, refused
    assert (
        as_sa(kube, install, "operator", *create, body=configmap("aegis-route-x", ours=True)) == ""
    )
    assert as_sa(kube, install, "operator", *patch[:2], "aegis-route-x", *patch[2:]) == ""
    # Secrets: only a ledger Secret of its own, by its name.
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-keys"}}
    refused = as_sa(kube, install, "operator", *create, body=secret)
    assert "may only write the ledger Secrets it made" in refused, refused


# (verb, resource[/name], subresource, namespace: REL, APP, OTHER, SYS or None for all)
Check = tuple[str, str, str, str | None]
CHECKS: dict[str, list[Check]] = {
    "operator": [
        ("watch", "llmroutes.aegis.io", "", "APP"),
        ("watch", "llmroutes.aegis.io", "", "OTHER"),
        ("watch", "llmroutes.aegis.io", "", None),
        ("patch", "llmroutes.aegis.io", "status", "APP"),
        ("patch", "llmbudgets.aegis.io", "status", "OTHER"),
        ("create", "configmaps", "", "APP"),
        ("create", "configmaps", "", "SYS"),
        ("list", "configmaps", "", "APP"),
        ("get", "secrets", "", "APP"),
        ("get", "secrets", "", "SYS"),
        ("get", "secrets/aegis-ledger", "", "APP"),
        ("get", "secrets/aegis-ledger", "", "OTHER"),
        ("update", "secrets/aegis-ledger", "", "APP"),
        ("create", "secrets", "", "APP"),
        ("create", "secrets", "", "SYS"),
        ("delete", "secrets/aegis-ledger", "", "APP"),
        ("list", "secrets", "", None),
        ("create", "pods", "", "APP"),
        ("get", "namespaces", "", None),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", None),
        ("patch", "validatingadmissionpolicies.admissionregistration.k8s.io", "", None),
        ("impersonate", "serviceaccounts", "", "REL"),
    ],
    "injector": [
        ("watch", "llmroutes.aegis.io", "", None),
        ("patch", "llmroutes.aegis.io", "", "APP"),
        ("get", "secrets", "", "APP"),
        ("get", "secrets/aegis-ledger", "", "APP"),
        ("create", "secrets", "", "REL"),
        ("create", "secrets", "", "APP"),
        ("get", "configmaps", "", "APP"),
        ("create", "pods", "", "APP"),
        ("list", "pods", "", None),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", None),
    ],
}
EXPECTED: dict[tuple[str, str], set[int]] = {
    # the indices of CHECKS[component] that are allowed, per mode
    ("operator", "default"): {0, 3, 5, 10, 12, 13},
    ("operator", "cluster-wide"): {0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14},
    ("injector", "default"): {0, 4},
    ("injector", "cluster-wide"): {0, 4},
}


def test_can_i_matrix_for_every_service_account(
    kube: Kube, install: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    names = {
        "REL": install.namespace, "APP": install.served, "OTHER": install.other,
        "SYS": "kube-system",
    }  # fmt: skip
    lines = [f"kubectl auth can-i, chart mode {install.mode} (release {install.release}):"]
    failures = []
    for component, checks in CHECKS.items():
        for index, (verb, resource, sub, where) in enumerate(checks):
            ns = names[where] if where else None
            allowed = can_i(kube, install.kubeconfigs[component], verb, resource, ns,
                            subresource=sub)  # fmt: skip
            target = f"{resource}{'/' + sub if sub else ''} in {where or 'all namespaces'}"
            lines.append(f"  {component:<9} {verb:<12} {target:<70} {'yes' if allowed else 'no'}")
            if allowed != (index in EXPECTED[(component, install.mode)]):
                failures.append(lines[-1])
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert not failures, "unexpected answers:\n" + "\n".join(failures)
