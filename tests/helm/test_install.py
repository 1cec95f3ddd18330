"""helm install / upgrade / uninstall into the real kube-apiserver of the test bed.

One release per module (its handle and values: tests/helm/release.py; the RBAC spot
checks: tests/helm/rbac_matrix.py; every optional feature at once:
test_install_features.py). Hooks are skipped on install and upgrade (``--no-hooks``):
with no kubelet the migration Job would never finish; its manifest is checked by a
server-side dry run and its command run here against the real Postgres. The operator
and the injector run as local processes with the chart's args, env and ServiceAccount
tokens, and must do their job with exactly the RBAC the chart installed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.kube import Kube
from tests.controlplane.postgres import PostgresServer
from tests.controlplane.procs import ServerProcess, start_on_free_ports, wait_until
from tests.helm import sync
from tests.helm.cluster import (
    AEGIS,
    adopt_crds,
    can_i,
    container_env,
    expand,
    grants_of_rules,
    listed_grants,
)
from tests.helm.rbac_matrix import INJECTOR_MATRIX, OPERATOR_MATRIX, TENANT_RULES
from tests.helm.release import (
    CLUSTER_SCOPED,
    CRD_NAMES,
    EXAMPLES,
    Operator,
    Release,
    assert_no_rbac_denial,
    http_status,
    installed_release,
)
from tests.operator.lifecycle import operator_roles

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


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
