"""The chart, offline: lint, render, schema, conventions, and agreement with its sources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm import sync
from tests.helm.chart import ALL_FEATURES, Helm, objects_by_kind, one

NAMESPACED_KINDS = {
    "ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Role", "RoleBinding", "Secret",
    "Service", "ServiceAccount", "StatefulSet", "Certificate", "Issuer", "PodMonitor",
    "PrometheusRule", "ServiceMonitor",
}  # fmt: skip


def values_file(helm: Helm, values: dict[str, Any]) -> str:
    path = helm.home / "all-features.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


# -- lint and render -----------------------------------------------------------------------
def test_lint_strict_with_defaults_and_every_feature(helm: Helm) -> None:
    chart = str(sync.CHART)
    for args in ([], ["-f", values_file(helm, ALL_FEATURES)]):
        done = helm.run("lint", "--strict", chart, *args)
        assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout
        assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


def test_chart_packages_with_its_copies(helm: Helm, tmp_path: Path) -> None:
    """`helm package` keeps files/ (the CRD and RBAC copies, the dashboard): no symlinks."""
    import tarfile

    helm.run("package", str(sync.CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("aegis-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    for path in [*sync.copies(), sync.DASHBOARD]:
        assert f"aegis/{path.relative_to(sync.CHART)}" in names, path


def test_defaults_render_the_core_objects(helm: Helm) -> None:
    kinds = objects_by_kind(helm.template())
    assert {k: len(v) for k, v in kinds.items()} == {
        "ClusterRole": 4,  # the operator's three (tenants on), the injector's
        # the injector's; the operator's cluster role (Namespaces, ClusterLLMBudgets);
        # its other roles are bound in the namespaces it serves
        "ClusterRoleBinding": 2,
        "ConfigMap": 1,  # the Grafana dashboard
        "CustomResourceDefinition": 3,
        "Deployment": 2,
        "Job": 1,  # the migration hook
        "MutatingWebhookConfiguration": 1,
        "PodDisruptionBudget": 1,
        "Role": 1,  # the injector's TLS Secret
        "RoleBinding": 3,  # the injector's; the operator's two in the release namespace
        "Service": 2,
        "ServiceAccount": 2,
        "ValidatingAdmissionPolicy": 2,  # the operator's writes; the route guardrails
        "ValidatingAdmissionPolicyBinding": 2,
    }


def test_every_optional_feature_renders(helm: Helm) -> None:
    kinds = objects_by_kind(helm.template(values=ALL_FEATURES))
    for kind, count in {
        "StatefulSet": 1,
        "Secret": 2,  # PostgreSQL password, ledger DSN
        "Certificate": 2,  # CA, serving
        "Issuer": 2,  # self-signed, CA
        "PodMonitor": 1,
        "ServiceMonitor": 2,
        "PrometheusRule": 1,
    }.items():
        assert len(kinds.get(kind, [])) == count, kind
    # cert-manager mode: no self-managed TLS Secret rules, cainjector fills the caBundle.
    webhook = kinds["MutatingWebhookConfiguration"][0]
    assert webhook["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "aegis-system/aegis-injector"
    }
    assert not [r for r in kinds.get("Role", []) if r["metadata"]["name"].endswith("-injector")]


def test_optional_features_are_off_by_default(helm: Helm) -> None:
    kinds = objects_by_kind(helm.template())
    for kind in ("StatefulSet", "Secret", "Certificate", "Issuer", "PodMonitor", "ServiceMonitor",
                 "PrometheusRule"):  # fmt: skip
        assert kind not in kinds  # none of them needs a CRD the cluster may lack


# -- conventions ---------------------------------------------------------------------------
@pytest.mark.parametrize("features", ["defaults", "all"])
def test_labels_namespaces_resources_and_security(helm: Helm, features: str) -> None:
    docs = helm.template(values=ALL_FEATURES if features == "all" else None)
    for doc in docs:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        labels = doc["metadata"].get("labels") or {}
        for key in ("name", "instance", "version", "managed-by", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels, (what, key)
        if doc["kind"] != "CustomResourceDefinition":
            assert "app.kubernetes.io/component" in labels, what
        if doc["kind"] in NAMESPACED_KINDS:
            assert doc["metadata"]["namespace"] == "aegis-system", what
        if features == "all":
            assert labels.get("team") == "platform", what
    for what, spec in pod_specs(docs):
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, what
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, what
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, what
            assert security["readOnlyRootFilesystem"] is True, what
            assert security["capabilities"] == {"drop": ["ALL"]}, what
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(requests), what
            assert "memory" in container["resources"]["limits"], what
        # Only the operator and the injector talk to the API server.
        if not any(name in what for name in ("operator", "injector")):
            assert spec["automountServiceAccountToken"] is False, what
        if features == "all":
            assert spec["imagePullSecrets"] == [{"name": "registry"}], what


def test_image_tag_digest_and_app_version(helm: Helm) -> None:
    chart = yaml.safe_load((sync.CHART / "Chart.yaml").read_text())
    images = {c["image"] for _, spec in pod_specs(helm.template()) for c in spec["containers"]}
    assert images == {f"ghcr.io/aegis-llm/aegis:{chart['appVersion']}"}
    digest = "sha256:" + "ab" * 32
    images = {
        c["image"]
        for _, spec in pod_specs(helm.template("--set", f"image.digest={digest}"))
        for c in spec["containers"]
    }
    assert images == {f"ghcr.io/aegis-llm/aegis@{digest}"}


def test_injector_is_highly_available(helm: Helm) -> None:
    docs = helm.template()
    deployment = one(docs, "Deployment", "-injector")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    selector = deployment["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget", "-injector")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (preferred,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    hard = one(helm.template("--set", "injector.podAntiAffinity=hard"), "Deployment", "-injector")
    (required,) = hard["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert required["topologyKey"] == "kubernetes.io/hostname"


# -- the schema ----------------------------------------------------------------------------
BAD_VALUES = [
    pytest.param(
        ["--set", "injector.replicas=1"],
        "at '/injector/replicas': minimum: got 1, want 2",
        id="single-injector",
    ),
    pytest.param(
        ["--set", "injector.timeoutSeconds=10"],
        "at '/injector/timeoutSeconds': maximum: got 10, want 5",
        id="slow-webhook",
    ),
    pytest.param(
        ["--set", "operator.replicas=2"],
        "at '/operator/replicas': maximum: got 2, want 1",
        id="two-operators",
    ),
    pytest.param(
        ["--set", "image.pullPolicy=Sometimes"],
        "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        id="pull-policy",
    ),
    pytest.param(
        ["--set", "injector.replica=3"],
        "at '/injector': additional properties 'replica' not allowed",
        id="typo",
    ),
    pytest.param(
        ["--set", "postgresql.enabled=yes"],
        "at '/postgresql/enabled': got string, want boolean",
        id="string-for-bool",
    ),
    pytest.param(
        ["--set", "certManager.duration=90d"],
        "at '/certManager/duration': '90d' does not match pattern",
        id="go-duration",
    ),
    pytest.param(
        ["--set", "monitoring.prometheusRule.errorRateRatio=5"],
        "at '/monitoring/prometheusRule/errorRateRatio': maximum: got 5, want 1",
        id="ratio-not-percent",
    ),
    pytest.param(
        ["--set", "ledger.existingSecret=Not_A_Name"],
        "at '/ledger/existingSecret': 'Not_A_Name' does not match pattern",
        id="secret-name",
    ),
    pytest.param(
        ["--set", "injector.resources.requests.memory=lots"],
        "at '/injector/resources/requests/memory': 'lots' does not match pattern",
        id="quantity",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES)
def test_schema_rejects_bad_values_clearly(helm: Helm, args: list[str], message: str) -> None:
    done = helm.run("template", "aegis", str(sync.CHART), *args, check=False)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr, done.stderr


def test_pod_disruption_budget_must_leave_room_to_drain(helm: Helm) -> None:
    chart = str(sync.CHART)
    too_many = "injector.podDisruptionBudget.minAvailable=2"
    done = helm.run("template", "aegis", chart, "--set", too_many, check=False)
    assert done.returncode != 0
    assert "injector.podDisruptionBudget.minAvailable (2) must be below injector.replicas (2)" in (
        done.stderr
    )


def _walk(values: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    """Paths of values.yaml that the schema does not describe (or describes loosely)."""
    if schema.get("type") == "object" and "properties" in schema:
        if schema.get("additionalProperties") is not False:
            yield f"{path or '/'}: object schema without additionalProperties: false"
        if not isinstance(values, dict):
            return
        for key, value in values.items():
            child = schema["properties"].get(key)
            if child is None:
                yield f"{path}/{key}: not in the schema"
                continue
            if "description" not in child:
                yield f"{path}/{key}: no description"
            yield from _walk(value, child, f"{path}/{key}")


def test_schema_covers_every_value(helm: Helm) -> None:
    values = yaml.safe_load((sync.CHART / "values.yaml").read_text())
    schema = json.loads((sync.CHART / "values.schema.json").read_text())
    assert list(_walk(values, schema, "")) == []
    # ... and the defaults themselves are valid (helm validates them on every render).
    helm.template()


# -- CRDs: one source ----------------------------------------------------------------------
def test_chart_copies_are_byte_identical_to_their_sources() -> None:
    """files/crds/*.yaml are crds/*.yaml, files/operator-rbac.yaml is operator/rbac.yaml."""
    assert sync.crd_sources(), "crds/*.yaml missing"
    assert sync.stale_copies() == [], f"run `{sync.COMMAND}`"
    for path, data in sync.copies().items():
        assert path.exists() and path.read_bytes() == data, (
            f"{path.relative_to(sync.ROOT)} differs from its source: run `{sync.COMMAND}`"
        )


def test_rendered_crds_are_the_sources_plus_release_metadata(helm: Helm) -> None:
    rendered = {d["metadata"]["name"]: d for d in helm.template() if d["kind"].startswith("Custom")}
    sources = [yaml.safe_load(data) for data in sync.crd_sources().values()]
    assert set(rendered) == {s["metadata"]["name"] for s in sources}
    for source in sources:
        crd = rendered[source["metadata"]["name"]]
        assert {k: v for k, v in crd.items() if k != "metadata"} == {
            k: v for k, v in source.items() if k != "metadata"
        }
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert source["metadata"].get("labels", {}).items() <= crd["metadata"]["labels"].items()
    not_kept = helm.template("--set", "crds.keep=false")
    assert all(
        "annotations" not in d["metadata"] for d in not_kept if d["kind"].startswith("Custom")
    )
    assert not [d for d in helm.template("--set", "crds.install=false") if "Custom" in d["kind"]]


# -- the migration hook --------------------------------------------------------------------
def test_migration_job_is_a_hook_reading_the_dsn_secret(helm: Helm) -> None:
    job = one(helm.template(), "Job", "-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["ledger", "migrate", "--url", "$(AEGIS_LEDGER_DSN)"]
    assert container["env"] == [
        {
            "name": "AEGIS_LEDGER_DSN",
            "valueFrom": {"secretKeyRef": {"name": "aegis-ledger", "key": "dsn"}},
        }
    ]
    existing = one(
        helm.template("--set", "ledger.existingSecret=pg", "--set", "ledger.secretKey=url"),
        "Job",
        "-migrate",
    )
    env = existing["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "url"}
    assert not [d for d in helm.template("--set", "migrations.enabled=false") if d["kind"] == "Job"]


def test_in_chart_postgresql_makes_the_ledger_secret(helm: Helm) -> None:
    docs = helm.template("--set", "postgresql.enabled=true", "--set", "postgresql.password=pw")
    import base64

    secret = one(docs, "Secret", "-ledger")
    dsn = base64.b64decode(secret["data"]["dsn"]).decode()
    assert dsn == "postgresql://aegis:pw@aegis-postgresql.aegis-system.svc:5432/aegis"
    statefulset = one(docs, "StatefulSet", "-postgresql")
    assert statefulset["spec"]["replicas"] == 1
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    # An existing Secret wins: the chart then makes none for the DSN.
    docs = helm.template("--set", "postgresql.enabled=true", "--set", "ledger.existingSecret=x")
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == ["aegis-postgresql"]


# -- monitoring ----------------------------------------------------------------------------
def test_plain_rules_file_is_the_charts_rule_groups() -> None:
    committed = yaml.safe_load(sync.RULES.read_text())
    assert sync.RULES.read_text().startswith("# Aegis alert rules")
    # the same groups the chart renders with its default values (tests.helm.sync writes it)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as home:
        rendered = sync.rule_groups(sync.helm_binary(), Path(home))
    assert committed == rendered, f"run `{sync.COMMAND}`"


def test_prometheus_rule_uses_values(helm: Helm) -> None:
    rule = one(
        helm.template(
            "--set", "monitoring.prometheusRule.enabled=true",
            "--set", "monitoring.prometheusRule.costPerDayUSD=25",
            "--set", "monitoring.prometheusRule.latencyProviderRegex=openai|azure",
            "--set", "monitoring.prometheusRule.labels.release=kube-prometheus",
        ),
        "PrometheusRule",
    )  # fmt: skip
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert exprs["AegisCostPerDayHigh"].endswith("> 25")
    assert 'provider=~"openai|azure"' in exprs["AegisLatencyP95High"]


def test_dashboard_configmap_carries_the_dashboard(helm: Helm) -> None:
    config = one(helm.template(), "ConfigMap", "-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config["data"]["aegis.json"]) == json.loads(sync.DASHBOARD.read_text())


# -- the injector: its own manifests and flags are the source --------------------------------
def _without_chart_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """An object minus what only the chart adds (its labels) and what helm tracks."""
    copy: dict[str, Any] = json.loads(json.dumps(obj))
    copy["metadata"].pop("labels", None)
    return copy


@pytest.mark.parametrize("cert_manager", [False, True], ids=["self-managed", "cert-manager"])
def test_webhook_configuration_is_the_injectors_own(helm: Helm, cert_manager: bool) -> None:
    from aegis.operator.injector import manifests

    docs = helm.template(
        "--set", f"certManager.enabled={str(cert_manager).lower()}",
        "--set", "injector.timeoutSeconds=3",
        "--set-json", 'injector.excludeNamespaces=["kube-system","istio-system"]',
        "--set-json",
        'injector.namespaceSelectorExpressions=[{"key":"tier","operator":"In","values":["apps"]}]',
    )  # fmt: skip
    rendered = one(docs, "MutatingWebhookConfiguration")
    expected = manifests.webhook_configuration(
        name="aegis-injector",
        namespace="aegis-system",
        service_name="aegis-injector",
        protected_namespaces=["kube-system", "istio-system"],
        extra_namespace_expressions=[{"key": "tier", "operator": "In", "values": ["apps"]}],
        cert_manager_certificate="aegis-system/aegis-injector" if cert_manager else None,
        timeout_seconds=3,
    )
    assert _without_chart_metadata(rendered) == _without_chart_metadata(expected)
    assert expected["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()
    for webhook in rendered["webhooks"]:
        assert "caBundle" not in webhook["clientConfig"]  # never reset by helm upgrade


@pytest.mark.parametrize("cert_manager", [False, True], ids=["self-managed", "cert-manager"])
def test_injector_rbac_is_the_injectors_own(helm: Helm, cert_manager: bool) -> None:
    from aegis.operator.injector import manifests

    docs = helm.template("--set", f"certManager.enabled={str(cert_manager).lower()}")
    expected = manifests.rbac(
        namespace="aegis-system",
        service_account="aegis-injector",
        webhook_config=None if cert_manager else "aegis-injector",
        tls_secret=None if cert_manager else "aegis-injector-tls",
    )
    rendered = [
        d for d in docs
        if d["kind"] in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                         "RoleBinding"}
        and d["metadata"]["name"] == "aegis-injector"
    ]  # fmt: skip
    assert sorted(map(_without_chart_metadata, rendered), key=lambda o: o["kind"]) == sorted(
        map(_without_chart_metadata, expected), key=lambda o: o["kind"]
    )


@pytest.mark.parametrize("cert_manager", [False, True], ids=["self-managed", "cert-manager"])
def test_injector_deployment_feeds_the_injectors_flags(
    helm: Helm, cert_manager: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every AEGIS_INJECTOR_* variable the chart sets is a real flag, with the chart's value."""
    import argparse

    from aegis.operator.injector import settings

    docs = helm.template(
        "--set", f"certManager.enabled={str(cert_manager).lower()}",
        "--set", "injector.sidecar.image=registry.example/aegis:sidecar",
        "--set", "injector.sidecar.ledgerSecret.name=ledger-dsn",
        "--set", "injector.sidecar.native=never",
    )  # fmt: skip
    deployment = one(docs, "Deployment", "-injector")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    flags = {settings.ENV_PREFIX + a.dest.upper() for a in parser._actions if a.dest != "help"} | {
        settings.ENV_PREFIX + "EXTRA_SANS"
    }
    unknown = {n for n in env if n.startswith(settings.ENV_PREFIX)} - flags
    assert not unknown, f"the injector has no flag for {unknown}"
    for name, value in env.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("POD_NAMESPACE", "aegis-system")
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    assert container["args"][0] == "injector"
    parsed = settings.from_args(parser.parse_args(container["args"][1:]))
    server, sidecar = parsed.server, parsed.sidecar
    assert server.namespace == "aegis-system"
    assert server.port == 8443 and server.metrics_port == 9788
    assert server.service_name == "aegis-injector"
    assert server.protected_namespaces == ("kube-system",)
    if cert_manager:
        assert server.tls_mode == "files" and server.webhook_config is None
        assert str(server.cert_dir) == "/etc/aegis/tls"
    else:
        assert server.tls_mode == "secret"
        assert server.tls_secret == "aegis-injector-tls"
        assert server.webhook_config == "aegis-injector"
    assert sidecar.image == "registry.example/aegis:sidecar"
    assert sidecar.metrics_host == "127.0.0.1"  # no PodMonitor: the pod's loopback only
    assert sidecar.ledger_secret_name == "ledger-dsn"
    assert sidecar.native == "never"
    assert dict(sidecar.resources) == {
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"memory": "256Mi"},
    }
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"webhook": server.port, "metrics": server.metrics_port}


# -- the operator ------------------------------------------------------------------------------
def test_operator_runs_alone_with_the_documented_rules(helm: Helm) -> None:
    docs = helm.template(
        "--set", "operator.clusterWide=true", "--set", "operator.checkSecrets=true"
    )
    deployment = one(docs, "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    documented = {
        d["metadata"]["name"]: d["rules"]
        for d in yaml.safe_load_all(sync.OPERATOR_RBAC.read_text())
        if d["kind"] == "ClusterRole"
    }
    for suffix in ("", "-cluster", "-tenants", "-secret-keys"):
        assert (
            one(docs, "ClusterRole", f"-operator{suffix}")["rules"]
            == documented[f"aegis-operator{suffix}"]
        )
        binding = one(docs, "ClusterRoleBinding", f"-operator{suffix}")
        assert binding["roleRef"]["name"] == f"aegis-operator{suffix}"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "aegis-operator", "namespace": "aegis-system"}
        ]


def test_operator_deployment_feeds_the_operators_flags(helm: Helm) -> None:
    from aegis.operator.cli import build_parser

    docs = helm.template("--set", "operator.budgetInterval=10", "--set", "operator.logLevel=DEBUG")
    (container,) = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "operator"
    assert args.all_namespaces is False and args.namespace == ["aegis-system"]  # only its own
    assert args.platform_namespace == "aegis-system"
    assert (args.check_secrets, args.tenant_secret) == (False, "aegis-ledger")
    assert (args.health_port, args.metrics_port) == (8080, 9090)
    assert args.budget_interval == 10.0
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e for e in container["env"]}
    # The read-only and control roles' DSNs, never the owner's (key dsn).
    assert env[args.ledger_dsn_env]["valueFrom"]["secretKeyRef"] == {
        "name": "aegis-ledger",
        "key": "readerDsn",
        "optional": True,
    }
    assert env[args.ledger_control_dsn_env]["valueFrom"]["secretKeyRef"]["key"] == "controlDsn"
    assert "dsn" not in [
        e.get("valueFrom", {}).get("secretKeyRef", {}).get("key") for e in env.values()
    ]
    assert env["AEGIS_LOG_LEVEL"]["value"] == "DEBUG"


def test_operator_watching_some_namespaces_is_bound_only_there(helm: Helm) -> None:
    from aegis.operator.cli import build_parser

    docs = helm.template("--set-json", 'operator.watchNamespaces=["team-a","team-b"]')
    (container,) = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"]
    assert build_parser().parse_args(container["args"]).namespace == ["team-a", "team-b"]
    cluster_wide = [
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ClusterRoleBinding" and "operator" in d["metadata"]["name"]
    ]
    assert cluster_wide == ["aegis-operator-cluster"]  # cluster objects only
    bindings = [
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "aegis-operator"
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert {b["roleRef"]["kind"] for b in bindings} == {"ClusterRole"}
    # The ledger Secret rule: only where served, only by its name (create aside).
    tenants = [b for b in docs if b["kind"] == "RoleBinding" and "tenants" in b["metadata"]["name"]]
    assert sorted(b["metadata"]["namespace"] for b in tenants) == ["team-a", "team-b"]
    rules = one(docs, "ClusterRole", "-operator-tenants")["rules"]
    assert rules[0] == {
        "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["aegis-ledger"],
        "verbs": ["get", "update"],
    }  # fmt: skip
    assert not [d for d in docs if "secret-keys" in d["metadata"]["name"]]  # checkSecrets off


def test_sidecar_metrics_are_fenced_when_prometheus_scrapes_them(helm: Helm) -> None:
    assert not [d for d in helm.template() if d["kind"] == "NetworkPolicy"]
    docs = helm.template(
        "--set", "monitoring.podMonitor.enabled=true",
        "--set-json", 'operator.watchNamespaces=["team-a","team-b"]',
    )  # fmt: skip
    (container,) = one(docs, "Deployment", "-injector")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AEGIS_INJECTOR_SIDECAR_METRICS_HOST"] == "0.0.0.0"
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]
    open_ports, metrics = policies[0]["spec"]["ingress"]
    tcp = [(p["port"], p["endPort"]) for p in open_ports["ports"] if p["protocol"] == "TCP"]
    assert tcp == [(1, 9786), (9788, 65535)]  # everything but the metrics port, from anywhere
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9787}]
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


# -- tracing ----------------------------------------------------------------------------------
def test_tracing_values_reach_the_operator_and_every_sidecar(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off by default; on, the operator gets the OTEL_* variables and the injector hands
    the same ones (named aegis-sidecar) to every sidecar, through its own flag."""
    import argparse

    from aegis.operator.injector import settings

    def containers(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
        (container,) = one(docs, "Deployment", suffix)["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    off = helm.template()
    assert not [n for n in containers(off, "-operator") if n.startswith("OTEL_")]
    assert "AEGIS_INJECTOR_SIDECAR_OTEL_ENV" not in containers(off, "-injector")

    docs = helm.template(
        "--set", "tracing.enabled=true",
        "--set", "tracing.endpoint=http://otel-collector.observability:4318",
        "--set", "tracing.sampler=parentbased_traceidratio",
        "--set", "tracing.samplerArg=0.25",
        "--set", "tracing.extraEnv.OTEL_EXPORTER_OTLP_HEADERS=x-tenant=aegis",
    )  # fmt: skip
    expected = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=aegis",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    operator = containers(docs, "-operator")
    assert {n: v for n, v in operator.items() if n.startswith("OTEL_")} == {
        **expected,
        "OTEL_SERVICE_NAME": "aegis-operator",
    }
    injector = containers(docs, "-injector")
    monkeypatch.setenv(
        "AEGIS_INJECTOR_SIDECAR_OTEL_ENV", injector["AEGIS_INJECTOR_SIDECAR_OTEL_ENV"]
    )
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    sidecar = settings.from_args(parser.parse_args([])).sidecar
    assert dict(sidecar.otel_env) == {**expected, "OTEL_SERVICE_NAME": "aegis-sidecar"}


def test_tracing_needs_an_endpoint_and_otel_names(helm: Helm) -> None:
    done = helm.run(
        "template", "aegis", str(sync.CHART), "--set", "tracing.enabled=true", check=False
    )
    assert done.returncode != 0
    assert "tracing.enabled needs tracing.endpoint" in done.stderr
    done = helm.run(
        "template", "aegis", str(sync.CHART), "--set", "tracing.extraEnv.AWS_SECRET=x", check=False
    )
    assert done.returncode != 0
    assert "'AWS_SECRET' does not match pattern '^OTEL_" in done.stderr, done.stderr
