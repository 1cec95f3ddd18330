"""A release of the chart in the test bed, for the install tests: the handle on it
(helm, its manifest and hooks, its ServiceAccounts' kubeconfigs, the processes run as
its components), its values, installing and uninstalling it, and the checks on what
those processes logged.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.kube import Kube
from tests.controlplane.procs import ServerProcess
from tests.helm import sync
from tests.helm.cluster import adopt_crds, token_kubeconfig
from tests.operator.lifecycle import as_role, operator_roles

CRD_NAMES = ("llmroutes.aegis.io", "llmbudgets.aegis.io", "clusterllmbudgets.aegis.io")
EXAMPLES = sync.ROOT / "crds" / "examples"
SCOPE_LABEL = "test.aegis.io/helm-release"
CLUSTER_SCOPED = {
    "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
}  # fmt: skip


@dataclass
class Release:
    kube: Kube
    name: str
    namespace: str
    app_namespace: str
    values: Path
    workdir: Path
    processes: list[ServerProcess] = field(default_factory=list)

    def helm(self, *args: str, check: bool = True) -> str:
        return self.kube.helm(*args, "-n", self.namespace, check=check).stdout

    def manifest(self) -> list[dict[str, Any]]:
        text = self.helm("get", "manifest", self.name)
        return [d for d in yaml.safe_load_all(text) if d]

    def hooks(self) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.helm("get", "hooks", self.name)) if d]

    def get(self, kind: str, name: str) -> Any:
        ns = [] if kind in CLUSTER_SCOPED else ["-n", self.namespace]
        return self.kube.kubectl_json("get", kind, name, *ns)

    def deployment_container(self, component: str) -> dict[str, Any]:
        deployment = self.get("deployment", f"{self.name}-{component}")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return dict(container)

    def kubeconfig(self, component: str) -> Path:
        path = self.workdir / f"{component}.kubeconfig"
        if not path.exists():
            token_kubeconfig(self.kube, self.namespace, f"{self.name}-{component}", path)
        return path

    def stop_processes(self) -> None:
        for process in self.processes:
            process.stop()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def install_values(
    release: str, dsn_secret: str, served: list[str], roles: tuple[str, str]
) -> dict[str, Any]:
    reader, control = roles
    return {
        "image": {"tag": "test"},
        "ledger": {"existingSecret": dsn_secret, "roles": {"reader": reader, "control": control}},
        "operator": {"budgetInterval": 5, "watchNamespaces": served},
        # Only namespaces labelled for this release ever reach its webhook.
        "injector": {
            "namespaceSelectorExpressions": [
                {"key": SCOPE_LABEL, "operator": "In", "values": [release]}
            ]
        },
        "postgresql": {"enabled": True, "persistence": {"size": "1Gi"}},
    }


@contextmanager
def installed_release(kube: Kube, ledger_url: str, workdir: Path) -> Iterator[Release]:
    """A release of the chart in namespaces of its own; uninstalled afterwards."""
    name = f"aegis-{uuid.uuid4().hex[:6]}"
    namespace = kube.create_namespace("aegis-rel")
    app_namespace = kube.create_namespace("aegis-app")
    kube.kubectl("label", "namespace", app_namespace, f"{SCOPE_LABEL}={name}")
    reader, control = operator_roles(ledger_url)
    kube.kubectl(
        "create", "secret", "generic", "ledger", "-n", namespace,
        f"--from-literal=dsn={ledger_url}",
        f"--from-literal=readerDsn={as_role(ledger_url, reader)}",
        f"--from-literal=controlDsn={as_role(ledger_url, control)}",
    )  # fmt: skip
    values = workdir / "values.yaml"
    served = [namespace, app_namespace]
    values.write_text(yaml.safe_dump(install_values(name, "ledger", served, (reader, control))))
    adopt_crds(kube, name, namespace, CRD_NAMES)
    handle = Release(kube, name, namespace, app_namespace, values, workdir)
    handle.helm("install", name, str(sync.CHART), "-f", str(values), "--no-hooks")
    try:
        yield handle
    finally:
        handle.stop_processes()
        handle.helm("uninstall", name, "--ignore-not-found", "--no-hooks")
        kube.delete_namespace(app_namespace)
        kube.delete_namespace(namespace)


@dataclass
class Operator:
    process: ServerProcess
    metrics_port: int


def assert_no_rbac_denial(process: ServerProcess) -> None:
    """The process never hit a rule the chart forgot (other 403s, e.g. from namespaces
    that other tests left terminating, are not RBAC's)."""
    log = process.log_tail(2000)
    assert 'forbidden: User "system:serviceaccount:' not in log, log
