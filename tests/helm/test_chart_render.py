"""The chart, offline: lint, render, schema, conventions, CRDs, the migration hook and
monitoring, and their agreement with their sources (the injector's, the operator's and
tracing's wiring is in test_chart_components.py)."""

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
