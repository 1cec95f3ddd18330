"""helm install / upgrade / uninstall into the real kube-apiserver of the test bed.

One release per module. Hooks are skipped on install and upgrade (``--no-hooks``): with
no kubelet the migration Job would never finish; its manifest is checked by a
server-side dry run and its command run here against the real Postgres. The operator
and the injector run as local processes with the chart's args, env and ServiceAccount
tokens, and must do their job with exactly the RBAC the chart installed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.kube import Kube
from tests.controlplane.postgres import PostgresServer
from tests.controlplane.procs import ServerProcess, start_on_free_ports, wait_until
from tests.helm import sync
from tests.helm.chart import ALL_FEATURES
from tests.helm.cluster import (
    AEGIS,
    adopt_crds,
    can_i,
    container_env,
    expand,
    grants_of_rules,
    listed_grants,
    token_kubeconfig,
)
from tests.operator.lifecycle import as_role, operator_roles

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

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


@pytest.fixture(scope="module")
def ledger_url(postgres: PostgresServer) -> Iterator[str]:
    postgres.start()
    url = postgres.create_database("helm")
    for role in operator_roles(url):
        postgres.psql(f"CREATE ROLE {role} LOGIN")
    yield url
    postgres.drop_database(url.rsplit("/", 1)[1])
    for role in operator_roles(url):
        postgres.psql(f"DROP OWNED BY {role}; DROP ROLE {role}")


@pytest.fixture(scope="module")
def release(
    kube: Kube, ledger_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    """The module's release (upgraded by one test, never uninstalled by any)."""
    with installed_release(kube, ledger_url, tmp_path_factory.mktemp("release")) as handle:
        yield handle


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


@pytest.fixture(scope="module")
def migrated(release: Release) -> str:
    """The migration hook's command, run here with the Job's env (Secret from the cluster)."""
    (job,) = [h for h in release.hooks() if h["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = container_env(release.kube, container, release.namespace, "migrate")
    done = subprocess.run(
        [*AEGIS, *expand(container["args"], env)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@dataclass
class Operator:
    process: ServerProcess
    metrics_port: int


@pytest.fixture(scope="module")
def operator(release: Release, migrated: str) -> Iterator[Operator]:
    """``aegis operator`` with the Deployment's args and env and the operator's token."""
    container = release.deployment_container("operator")
    env = container_env(release.kube, container, release.namespace, "operator-local")

    def launch(ports: list[int]) -> ServerProcess:
        health, metrics = ports
        argv = [
            *AEGIS, *container["args"],
            f"--health-port={health}", f"--metrics-port={metrics}",  # free ports here
        ]  # fmt: skip
        process = ServerProcess(
            "operator",
            argv,
            release.workdir / "operator.log",
            env={
                **release.kube.env,
                **env,
                "KUBECONFIG": str(release.kubeconfig("operator")),
                "AEGIS_LOG_FORMAT": "text",
            },
        )
        release.processes.append(process)
        process.start()
        return process

    process, (_, metrics) = start_on_free_ports(
        launch,
        2,
        lambda ports: http_status(f"http://127.0.0.1:{ports[0]}/healthz") == 200,
        timeout=60,
        what="operator liveness",
    )
    yield Operator(process, metrics)
    process.stop()


def assert_no_rbac_denial(process: ServerProcess) -> None:
    """The process never hit a rule the chart forgot (other 403s, e.g. from namespaces
    that other tests left terminating, are not RBAC's)."""
    log = process.log_tail(2000)
    assert 'forbidden: User "system:serviceaccount:' not in log, log


# -- the release -------------------------------------------------------------------------
def test_every_rendered_object_is_accepted(release: Release) -> None:
    manifest = release.manifest()
    kinds = {d["kind"] for d in manifest}
    assert {"Deployment", "StatefulSet", "MutatingWebhookConfiguration",
            "CustomResourceDefinition", "PodDisruptionBudget"} <= kinds  # fmt: skip
    for obj in manifest:
        stored = release.get(obj["kind"], obj["metadata"]["name"])
        assert stored["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name
    # The hook was skipped (no kubelet would run it) but the API server accepts it.
    (job,) = [h for h in release.hooks() if h["kind"] == "Job"]
    release.kube.kubectl(
        "create", "--dry-run=server", "-n", release.namespace, "-f", "-", input=json.dumps(job)
    )
    status = json.loads(release.helm("status", release.name, "-o", "json"))
    assert status["info"]["status"] == "deployed"
    notes = release.helm("get", "notes", release.name)
    assert f"deployment/{release.name}-operator" in notes
    assert "FOR EVALUATION ONLY" in notes


def test_crds_are_established_and_kept_on_uninstall(release: Release) -> None:
    for name in CRD_NAMES:
        crd = release.kube.kubectl_json("get", "crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release.name


def test_migration_hook_command_migrates_the_ledger(migrated: str) -> None:
    assert migrated.startswith("ledger at revision")


# -- the operator, with its token ------------------------------------------------------------
@pytest.fixture(scope="module")
def examples(release: Release, operator: Operator) -> dict[str, Any]:
    """The example route, budgets and Secrets applied, and the route rendered and Ready."""
    kube, ns = release.kube, release.app_namespace
    for example in ("secrets.yaml", "budgets.yaml", "rag-api-route.yaml"):
        kube.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / example))

    def configmap() -> Any:
        done = kube.kubectl("get", "configmap", "aegis-route-rag-api", "-n", ns, "-o", "json",
                            check=False)  # fmt: skip
        return json.loads(done.stdout) if done.returncode == 0 else None

    rendered = wait_until(configmap, timeout=60, what="ConfigMap aegis-route-rag-api")
    route = wait_until(
        lambda: _ready(kube.kubectl_json("get", "llmroute", "rag-api", "-n", ns)),
        timeout=60,
        what="LLMRoute Ready",
    )
    return {"configmap": rendered, "route": route}


def test_operator_reconciles_routes_and_budgets(
    release: Release, operator: Operator, examples: dict[str, Any]
) -> None:
    kube, ns = release.kube, release.app_namespace
    assert "config.yaml" in examples["configmap"]["data"]
    assert examples["route"]["status"]["configHash"]

    def budget_synced() -> Any:
        budget = kube.kubectl_json("get", "llmbudget", "openai-monthly", "-n", ns)
        return budget if (budget.get("status") or {}).get("lastSync") else None

    budget = wait_until(budget_synced, timeout=60, what="LLMBudget status from the ledger")
    assert budget["status"]["remainingUSD"] in ("80", "80.00", 80)
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        metrics = response.read().decode()
    assert f'aegis_budget_limit_usd{{budget="openai-monthly",namespace="{ns}"' in metrics
    assert_no_rbac_denial(operator.process)


def _ready(obj: dict[str, Any]) -> dict[str, Any] | None:
    conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])}
    return obj if conditions.get("Ready") == "True" else None


# -- the injector, with its token ------------------------------------------------------------
def test_injector_keeps_the_ca_bundle_and_serves_admission(
    release: Release, examples: dict[str, Any]
) -> None:
    kube = release.kube
    container = release.deployment_container("injector")
    env = container_env(kube, container, release.namespace, "injector-local")

    def launch(ports: list[int]) -> ServerProcess:
        port, metrics = ports
        argv = [
            *AEGIS, *container["args"],
            # Here, not behind the Service: a local port, and the address the API server dials.
            "--listen-host=127.0.0.1", f"--port={port}", f"--metrics-port={metrics}",
            f"--extra-san={kube.webhook_host}", "--tls-check-interval=1", "--shutdown-delay=0",
        ]  # fmt: skip
        process = ServerProcess(
            "injector",
            argv,
            release.workdir / "injector.log",
            env={
                **kube.env,
                **env,
                "KUBECONFIG": str(release.kubeconfig("injector")),
                "AEGIS_LOG_FORMAT": "text",
            },
        )
        release.processes.append(process)
        process.start()
        return process

    process, (port, _) = start_on_free_ports(
        launch,
        2,
        lambda ports: http_status(f"http://127.0.0.1:{ports[1]}/readyz") == 200,
        timeout=60,
        what="injector ready",
    )
    webhook_name = f"{release.name}-injector"

    def ca_bundles() -> list[str] | None:
        config = release.get("mutatingwebhookconfiguration", webhook_name)
        bundles = [w["clientConfig"].get("caBundle", "") for w in config["webhooks"]]
        return bundles if all(bundles) else None

    bundles = wait_until(ca_bundles, timeout=30, what="caBundle patched by the injector")
    tls = release.get("secret", f"{release.name}-injector-tls")
    # The CA the injector keeps in its TLS Secret (in the release namespace) is the bundle.
    assert set(bundles) == {tls["data"]["ca-bundle.crt"]}
    assert base64.b64decode(bundles[0]).startswith(b"-----BEGIN CERTIFICATE-----")

    # The API server cannot reach the Service here (no kube-proxy): point the chart's
    # webhook configuration at the local process for this test, keeping the caBundle.
    original = release.get("mutatingwebhookconfiguration", webhook_name)["webhooks"]

    def client_configs(configs: list[dict[str, Any]]) -> None:
        patch = [
            {"op": "replace", "path": f"/webhooks/{i}/clientConfig", "value": config}
            for i, config in enumerate(configs)
        ]
        kube.kubectl(
            "patch", "mutatingwebhookconfiguration", webhook_name, "--type=json",
            "-p", json.dumps(patch),
        )  # fmt: skip

    client_configs(
        [
            {"url": f"https://{kube.webhook_host}:{port}/inject/{entry}", "caBundle": bundle}
            for entry, bundle in zip(("pod", "namespace"), bundles, strict=True)
        ]
    )
    try:
        created = wait_until(
            lambda: _create_injected(release), timeout=60, what="an injected pod", interval=0.5
        )
    finally:
        client_configs([w["clientConfig"] for w in original])
    sidecars = [
        c for c in created["spec"].get("initContainers", []) + created["spec"]["containers"]
        if c["name"] == "aegis-sidecar"
    ]  # fmt: skip
    assert len(sidecars) == 1
    assert sidecars[0]["image"] == "ghcr.io/aegis-llm/aegis:test"
    sidecar_env = {e["name"]: e for e in sidecars[0]["env"]}
    assert sidecar_env["AEGIS_LEDGER_DSN"]["valueFrom"]["secretKeyRef"] == {
        "name": "aegis-ledger",
        "key": "dsn",
    }
    assert_no_rbac_denial(process)


def _create_injected(release: Release) -> dict[str, Any] | None:
    """Create an opted-in pod; None while the API server does not call the webhook yet."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "rag-api-",
            "labels": {"app": "rag-api", "aegis.io/inject": "true"},
        },
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }
    done = release.kube.kubectl(
        "create", "-n", release.app_namespace, "-o", "json", "-f", "-",
        input=json.dumps(pod), check=False,
    )  # fmt: skip
    if done.returncode != 0:
        assert "failed calling webhook" in done.stderr, done.stderr
        return None
    created: dict[str, Any] = json.loads(done.stdout)
    annotations = created["metadata"].get("annotations") or {}
    assert "aegis.io/injected-by" in annotations, created
    return created


# -- RBAC: nothing beyond the documented rules --------------------------------------------
def test_rbac_allows_exactly_the_documented_rules(release: Release) -> None:
    kube = release.kube
    documented_operator = next(
        d for d in yaml.safe_load_all(sync.OPERATOR_RBAC.read_text()) if d["kind"] == "ClusterRole"
    )["rules"]
    assert [r["resources"] for r in TENANT_RULES] == [
        r["resources"]
        for d in yaml.safe_load_all(sync.OPERATOR_RBAC.read_text())
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "aegis-operator-tenants"
        for r in d["rules"]
    ]
    cluster_scoped = next(
        d
        for d in yaml.safe_load_all(sync.OPERATOR_RBAC.read_text())
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "aegis-operator-cluster"
    )["rules"]
    from aegis.operator.injector import manifests

    injector_objects = manifests.rbac(
        namespace=release.namespace,
        service_account=f"{release.name}-injector",
        webhook_config=f"{release.name}-injector",
        tls_secret=f"{release.name}-injector-tls",
    )
    injector_cluster = next(o for o in injector_objects if o["kind"] == "ClusterRole")["rules"]
    injector_ns = next(o for o in injector_objects if o["kind"] == "Role")["rules"]
    operator_cfg, injector_cfg = release.kubeconfig("operator"), release.kubeconfig("injector")
    for ns in (release.namespace, release.app_namespace, "kube-system"):
        # Served namespaces only (RoleBindings): the documented rules and the ledger Secret.
        served = ns != "kube-system"
        # Bound cluster-wide in every mode (namespaces, ClusterLLMBudgets): listed everywhere.
        expected_operator = cluster_scoped + (
            (documented_operator + TENANT_RULES) if served else []
        )
        assert listed_grants(kube, operator_cfg, ns) == grants_of_rules(expected_operator), ns
        expected = injector_cluster + (injector_ns if ns == release.namespace else [])
        assert listed_grants(kube, injector_cfg, ns) == grants_of_rules(expected), ns


TENANT_RULES = [
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["aegis-ledger"],
     "verbs": ["get", "update"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
]  # fmt: skip

# (verb, resource[/name], subresource, namespace: REL, APP, SYS or None for cluster-wide,
# allowed); the chart's default: the operator bound in the namespaces it serves only.
Check = tuple[str, str, str, str | None, bool]
OPERATOR_MATRIX: list[Check] = [
    ("watch", "llmroutes.aegis.io", "", "APP", True),
    ("watch", "llmroutes.aegis.io", "", None, False),
    ("watch", "llmroutes.aegis.io", "", "SYS", False),
    ("watch", "clusterllmbudgets.aegis.io", "", None, True),
    ("patch", "clusterllmbudgets.aegis.io", "status", None, True),
    ("create", "clusterllmbudgets.aegis.io", "", None, False),
    ("delete", "clusterllmbudgets.aegis.io", "", None, False),
    ("watch", "namespaces", "", None, True),
    ("patch", "namespaces", "", None, False),
    ("patch", "llmbudgets.aegis.io", "status", "APP", True),
    ("update", "llmroutes.aegis.io", "finalizers", "APP", True),
    ("create", "configmaps", "", "APP", True),
    ("create", "configmaps", "", "SYS", False),
    ("get", "secrets", "", "APP", False),
    ("get", "secrets/aegis-ledger", "", "APP", True),
    ("update", "secrets/aegis-ledger", "", "APP", True),
    ("get", "secrets/aegis-ledger", "", "SYS", False),
    ("delete", "secrets/aegis-ledger", "", "APP", False),
    ("create", "events.events.k8s.io", "", "APP", True),
    ("list", "secrets", "", "APP", False),
    ("watch", "secrets", "", None, False),
    ("list", "configmaps", "", "APP", False),
    ("update", "configmaps", "", "APP", False),
    ("create", "llmroutes.aegis.io", "", "APP", False),
    ("delete", "llmroutes.aegis.io", "", "APP", False),
    ("update", "llmroutes.aegis.io", "", "APP", False),
    ("create", "pods", "", "APP", False),
    ("list", "pods", "", None, False),
    ("get", "namespaces", "", None, False),
    ("get", "customresourcedefinitions.apiextensions.k8s.io", "", None, False),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", None, False),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", None, False),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", "", None, False),
    ("impersonate", "serviceaccounts", "", "REL", False),
    ("create", "serviceaccounts", "token", "REL", False),
]
INJECTOR_MATRIX: list[Check] = [
    ("list", "llmroutes.aegis.io", "", None, True),
    ("watch", "llmroutes.aegis.io", "", None, True),
    ("get", "mutatingwebhookconfigurations.admissionregistration.k8s.io/WEBHOOK", "", None, True),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/WEBHOOK", "", None,
     True),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/other", "", None,
     False),
    ("list", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", None, False),
    ("delete", "mutatingwebhookconfigurations.admissionregistration.k8s.io/WEBHOOK", "", None,
     False),
    ("update", "secrets/TLS", "", "REL", True),
    ("create", "secrets", "", "REL", True),
    ("get", "secrets/ledger", "", "REL", False),
    ("list", "secrets", "", "REL", False),
    ("get", "secrets/TLS", "", "APP", False),
    ("create", "secrets", "", "APP", False),
    ("patch", "llmroutes.aegis.io", "", "APP", False),
    ("patch", "llmroutes.aegis.io", "status", "APP", False),
    ("get", "configmaps", "", "APP", False),
    ("list", "pods", "", None, False),
    ("create", "pods", "", "APP", False),
    ("get", "namespaces", "", None, False),
]  # fmt: skip


@pytest.mark.parametrize("component", ["operator", "injector"])
def test_can_i_matrix(release: Release, component: str) -> None:
    """Spot checks with `kubectl auth can-i` as the ServiceAccount: what the documented
    rules allow, and what a looser chart would have let through."""
    matrix = OPERATOR_MATRIX if component == "operator" else INJECTOR_MATRIX
    names = {
        "WEBHOOK": f"{release.name}-injector",
        "TLS": f"{release.name}-injector-tls",
        "REL": release.namespace,
        "APP": release.app_namespace,
        "SYS": "kube-system",
    }

    def sub(text: str) -> str:
        for placeholder, value in names.items():
            text = text.replace(placeholder, value)
        return text

    config = release.kubeconfig(component)
    answers = [
        (verb, resource, subresource, namespace,
         can_i(release.kube, config, verb, sub(resource), names.get(namespace or ""),
               subresource=subresource))
        for verb, resource, subresource, namespace, _ in matrix
    ]  # fmt: skip
    assert answers == matrix


# -- upgrade and uninstall -------------------------------------------------------------------
def test_upgrade_applies_changes_and_keeps_the_injectors_ca_bundle(release: Release) -> None:
    webhook = f"{release.name}-injector"
    before = [
        w["clientConfig"].get("caBundle")
        for w in release.get("mutatingwebhookconfiguration", webhook)["webhooks"]
    ]
    earlier = json.loads(release.helm("history", release.name, "-o", "json"))
    release.helm(
        "upgrade", release.name, str(sync.CHART), "-f", str(release.values), "--no-hooks",
        "--set", "injector.replicas=3", "--set", "commonLabels.upgraded=yes",
    )  # fmt: skip
    assert release.get("deployment", webhook)["spec"]["replicas"] == 3
    assert (
        release.get("deployment", f"{release.name}-operator")["metadata"]["labels"]["upgraded"]
        == "yes"
    )
    after = [
        w["clientConfig"].get("caBundle")
        for w in release.get("mutatingwebhookconfiguration", webhook)["webhooks"]
    ]
    assert after == before  # helm never rendered caBundle, so it never resets it
    history = json.loads(release.helm("history", release.name, "-o", "json"))
    # This upgrade is the one deployed revision, whatever came before it.
    statuses = [h["status"] for h in sorted(history, key=lambda h: h["revision"])]
    assert len(history) == len(earlier) + 1
    assert statuses[-1] == "deployed" and set(statuses[:-1]) == {"superseded"}


def test_uninstall_leaves_crds_and_custom_resources(
    kube: Kube, ledger_url: str, tmp_path: Path, release: Release
) -> None:
    # A release of its own (the module's stays installed for every other test), which
    # takes the CRDs over and, once uninstalled, hands them back the documented way.
    with (
        contextlib.ExitStack() as cleanup,
        installed_release(kube, ledger_url, tmp_path) as own,
    ):
        cleanup.callback(adopt_crds, kube, release.name, release.namespace, CRD_NAMES)
        ns = own.app_namespace
        for example in ("secrets.yaml", "budgets.yaml", "rag-api-route.yaml"):
            kube.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / example))
        owned = [d for d in own.manifest() if d["kind"] != "CustomResourceDefinition"]
        own.helm("uninstall", own.name)
        for obj in owned:
            kind, name = obj["kind"], obj["metadata"]["name"]
            scope = [] if kind in CLUSTER_SCOPED else ["-n", own.namespace]
            gone = kube.kubectl("get", kind, name, *scope, check=False)
            assert gone.returncode != 0 and "NotFound" in gone.stderr, (kind, name)
        for name in CRD_NAMES:
            kube.kubectl("get", "crd", name)
        # The custom resources are untouched.
        kube.kubectl("get", "llmroute", "rag-api", "-n", ns)
        assert kube.kubectl_json("get", "llmbudgets", "-n", ns)["items"]


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
