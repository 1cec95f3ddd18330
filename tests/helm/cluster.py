"""Running what the chart installed: as local processes, with its ServiceAccounts' tokens.

The test bed has no kubelet, so the chart's pods never start; instead a test takes a
container from the installed Deployment (its args and env, Secrets resolved from the
cluster) and runs the same command here, authenticated with a token of the
ServiceAccount the chart created. Whatever that process can do, the chart's RBAC
allows; whatever it is refused, the chart forgot.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.kube import Kube, run_tool

#: ``python -m aegis.operator.cli``: the console script's module, so the installed
#: package (not a stale script) runs.
AEGIS = [sys.executable, "-m", "aegis.operator.cli"]


def token_kubeconfig(kube: Kube, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig that authenticates with a bound token of the ServiceAccount (1 h)."""
    token = kube.kubectl(
        "create", "token", service_account, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": kube.server,
                    "certificate-authority-data": base64.b64encode(kube.server_ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": service_account}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def kubectl_as(
    kube: Kube, kubeconfig: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """kubectl with a ServiceAccount's kubeconfig (not the admin's)."""
    argv = [kube.kubectl_bin, f"--kubeconfig={kubeconfig}", *args]
    env = {**kube.env, "KUBECONFIG": str(kubeconfig)}
    return run_tool(argv, env=env, check=check)


def secret_value(kube: Kube, namespace: str, name: str, key: str) -> str:
    secret = kube.kubectl_json("get", "secret", name, "-n", namespace)
    return base64.b64decode(secret["data"][key]).decode()


def container_env(
    kube: Kube, container: Mapping[str, Any], namespace: str, pod_name: str
) -> dict[str, str]:
    """The container's environment as the kubelet would build it (Secrets read as admin)."""
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            env[var["name"]] = {"metadata.namespace": namespace, "metadata.name": pod_name}[field]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = secret_value(kube, namespace, ref["name"], ref["key"])
        else:
            raise AssertionError(f"unsupported env source {source}")
    return env


def expand(args: Iterable[str], env: Mapping[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in container args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), arg) for arg in args]


def adopt_crds(kube: Kube, release: str, namespace: str, names: Iterable[str]) -> list[str]:
    """Let ``release`` take over CRDs that already exist (applied with kubectl, or by an
    earlier release): the documented way to move CRDs under Helm (docs/install.md)."""
    adopted = []
    for name in names:
        if kube.kubectl("get", "crd", name, check=False).returncode != 0:
            continue
        kube.kubectl(
            "annotate", "crd", name, "--overwrite",
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )  # fmt: skip
        kube.kubectl("label", "crd", name, "--overwrite", "app.kubernetes.io/managed-by=Helm")
        adopted.append(name)
    return adopted


# -- RBAC --------------------------------------------------------------------------------
Grant = tuple[str, frozenset[str], frozenset[str]]
"""(resource[.group], resourceNames, verbs)"""

#: What every authenticated identity may do (system:basic-user and friends).
BUILT_IN = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}


def _merge(grants: Iterable[tuple[str, frozenset[str], Iterable[str]]]) -> set[Grant]:
    merged: dict[tuple[str, frozenset[str]], set[str]] = {}
    for resource, names, verbs in grants:
        merged.setdefault((resource, names), set()).update(verbs)
    return {(r, n, frozenset(v)) for (r, n), v in merged.items()}


def grants_of_rules(rules: Iterable[Mapping[str, Any]]) -> set[Grant]:
    """The resource grants of RBAC rules, as ``kubectl auth can-i --list`` names them."""
    found = []
    for rule in rules:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                name = f"{resource}.{group}" if group else resource
                if "/" in resource and group:  # llmroutes/status.aegis.io
                    base, sub = resource.split("/", 1)
                    name = f"{base}.{group}/{sub}"
                found.append((name, frozenset(rule.get("resourceNames") or ()), rule["verbs"]))
    return _merge(found)


_ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def listed_grants(kube: Kube, kubeconfig: Path, namespace: str) -> set[Grant]:
    """``kubectl auth can-i --list -n NS`` as the ServiceAccount, built-ins left out."""
    out = kubectl_as(kube, kubeconfig, "auth", "can-i", "--list", "-n", namespace).stdout
    found = []
    for line in out.splitlines()[1:]:
        match = _ROW.match(line)
        assert match, f"unexpected can-i line {line!r}"
        resource, _urls, names, verbs = match.groups()
        if not resource or resource in BUILT_IN:
            continue  # non-resource URLs (discovery) and self-reviews: every user has them
        found.append((resource, frozenset(names.split()), verbs.split()))
    return _merge(found)


def can_i(
    kube: Kube,
    kubeconfig: Path,
    verb: str,
    resource: str,
    namespace: str | None,
    *,
    subresource: str = "",
) -> bool:
    """``kubectl auth can-i`` as the ServiceAccount (namespace None: all namespaces)."""
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    extra = [f"--subresource={subresource}"] if subresource else []
    done = kubectl_as(
        kube, kubeconfig, "auth", "can-i", verb, resource, *scope, *extra, check=False
    )
    answer = done.stdout.strip()
    assert answer in {"yes", "no"}, done.stdout + done.stderr
    return answer == "yes"
