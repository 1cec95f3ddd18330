"""The sidecars' OTEL_* variables: from the chart's tracing values to every injected pod."""

from __future__ import annotations

import json

import pytest

from aegis.operator.cli import build_parser
from aegis.operator.injector.patch import sidecar_env
from aegis.operator.injector.settings import InjectorSettings, from_args
from tests.injector.helpers import route


def settings(monkeypatch: pytest.MonkeyPatch, otel: dict[str, str] | None) -> InjectorSettings:
    if otel is not None:
        monkeypatch.setenv("AEGIS_INJECTOR_SIDECAR_OTEL_ENV", json.dumps(otel))
    return from_args(build_parser().parse_args(["injector"]))


def test_no_tracing_values_leave_the_sidecar_without_otel_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = sidecar_env(route(), settings(monkeypatch, None).sidecar)
    assert not [e for e in env if e["name"].startswith("OTEL_")]


def test_tracing_values_reach_the_sidecar_with_the_pod_as_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.observability:4318",
        "OTEL_SERVICE_NAME": "aegis-sidecar",
        "OTEL_TRACES_SAMPLER": "",  # empty values are left out
    }
    env = {
        e["name"]: e.get("value") for e in sidecar_env(route(), settings(monkeypatch, otel).sidecar)
    }
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.observability:4318"
    assert env["OTEL_SERVICE_NAME"] == "aegis-sidecar"
    assert "OTEL_TRACES_SAMPLER" not in env
    # Kubernetes expands $(POD_NAME): POD_NAME is declared before it.
    names = list(env)
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == (
        "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"
    )


def test_other_variables_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="OTEL_\\* variables only, not AWS_SECRET"):
        settings(monkeypatch, {"OTEL_SERVICE_NAME": "x", "AWS_SECRET": "y"})
