"""The chart, offline: the injector's and the operator's objects and flags agree with
their own manifests and argument parsers, and tracing values reach both."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.helm import sync
from tests.helm.chart import Helm, one


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
