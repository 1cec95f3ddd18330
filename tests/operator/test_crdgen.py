"""The CRDs are generated from the models and cover the sidecar config, field by field."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aegis.operator.api import crdgen
from aegis.operator.api.cluster import ClusterLLMBudgetSpec
from aegis.operator.api.extras import DESCRIPTIONS
from aegis.operator.api.schema import reachable_models
from aegis.operator.api.specs import LLMBudgetSpec, LLMRouteSpec
from aegis.sidecar.contract.schema import SidecarConfig

CRDS = Path(__file__).resolve().parents[2] / "crds"

#: Sidecar config fields the operator renders itself, and from what.
OPERATOR_RENDERED = {
    "apiVersion": "constant",
    "kind": "constant",
    "identity.route": "metadata.name",
    "identity.namespace": "metadata.namespace",
    "providers[].apiKeyEnv": "AEGIS_KEY_<PROVIDER> for spec.providers[].apiKeySecretRef",
    "budgets[].name": "LLMBudget metadata.name",
    "budgets[].namespace": "LLMBudget metadata.namespace",
    "budgets[].scope": "the budget's kind (Namespace: LLMBudget, Cluster: ClusterLLMBudget)",
    "rollout.weight": "status.rollout.weight",
    "rollout.step": "status.rollout.step",
    "rollout.salt": "hash of spec.rollout.candidate",
    "ledger.url": "sidecar default (the DSN comes from ledger.urlEnv)",
    "ledger.urlEnv": "AEGIS_LEDGER_DSN, filled by the injector from a Secret",
    "listen.host": "sidecar default (loopback)",
    "listen.port": "sidecar default; the injector passes --port",
    "listen.metricsPort": "sidecar default; the injector passes --metrics-port",
    "listen.metricsHost": "sidecar default; the injector passes --metrics-host",
    "listen.maxBodyBytes": "sidecar default",
    "listen.limits": "sidecar defaults (resource bounds)",
}
#: CRD fields with no counterpart in the sidecar config, and who uses them.
CRD_ONLY = {
    "route": {
        "podSelector": "the injector",
        "providers[].apiKeySecretRef": "the injector (secretKeyRef) and the Secret check",
        "rollout.steps": "rollout controller",
        "rollout.interval": "rollout controller",
        "rollout.analysis": "rollout controller",
        "rollout.paused": "rollout state",
        "rollout.abort": "rollout state",
        "rollout.promote": "rollout controller",
    },
    "budget": {"routes": "budget scope", "namespaces": "budget scope"},
    "cluster": {"namespaceSelector": "spenders in the ledger, the routes that render it"},
}


def _model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field path of a model (camelCase, lists as ``[]``, map values as ``{}``)."""
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        paths.add(path)
        paths |= _nested(field.annotation, path)
    return paths


def _nested(annotation: Any, path: str) -> set[str]:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_paths(annotation, f"{path}.")
    if origin is list:
        return _nested(typing.get_args(annotation)[0], f"{path}[]")
    if origin is dict:
        return _nested(typing.get_args(annotation)[1], f"{path}{{}}")
    found: set[str] = set()
    for arg in typing.get_args(annotation):
        found |= _nested(arg, path)
    return found


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, prop in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        paths.add(path)
        paths |= _schema_children(prop, path)
    return paths


def _schema_children(prop: dict[str, Any], path: str) -> set[str]:
    if prop.get("type") == "array":
        return _schema_children(prop["items"], f"{path}[]")
    if isinstance(prop.get("additionalProperties"), dict):
        return _schema_children(prop["additionalProperties"], f"{path}{{}}")
    if prop.get("type") == "object":
        return _schema_paths(prop, f"{path}.")
    return set()


def _spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    version = crd["spec"]["versions"][0]
    spec: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def _only_rendered(path: str, config: set[str]) -> bool:
    """``path`` is an object holding operator-rendered fields only (identity, ledger…)."""
    inner = {p for p in config if p.startswith(f"{path}.")}
    return bool(inner) and all(_under(p, set(OPERATOR_RENDERED)) for p in inner)


def _under(path: str, roots: set[str]) -> bool:
    return any(path == root or path.startswith((f"{root}.", f"{root}[")) for root in roots)


def test_committed_crds_are_generated() -> None:
    for name, text in crdgen.documents().items():
        assert (CRDS / name).read_text() == text, (
            f"crds/{name} is stale: run python -m aegis.operator.api.crdgen"
        )


def test_check_flag_reports_stale_files(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0


def test_every_sidecar_config_field_comes_from_the_crds_or_the_operator() -> None:
    config = _model_paths(SidecarConfig)
    route = _schema_paths(_spec_schema(crdgen.route_crd()))
    budget = _schema_paths(_spec_schema(crdgen.budget_crd()))
    for path in sorted(config):
        if _under(path, set(OPERATOR_RENDERED)):
            assert path not in route, f"{path} is rendered by the operator but also in the CRD"
        elif path.startswith("budgets[]."):
            assert path.removeprefix("budgets[].") in budget, f"LLMBudget lacks {path}"
        elif not _only_rendered(path, config) and path != "budgets":
            assert path in route, f"sidecar config field {path} is not in the LLMRoute CRD"
    for path in OPERATOR_RENDERED:
        assert path in config, f"{path} is no longer a sidecar config field"


def test_every_crd_field_reaches_the_config_or_has_a_user() -> None:
    config = _model_paths(SidecarConfig)
    budget_fields = {p.removeprefix("budgets[].") for p in config if p.startswith("budgets[].")}
    for kind, crd, known in (
        ("route", crdgen.route_crd(), config),
        ("budget", crdgen.budget_crd(), budget_fields),
        ("cluster", crdgen.cluster_budget_crd(), budget_fields),
    ):
        for path in sorted(_schema_paths(_spec_schema(crd))):
            if not _under(path, set(CRD_ONLY[kind])):
                assert path in known, f"{kind} CRD field {path} reaches no sidecar config field"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, prop in (schema.get("properties") or {}).items():
        found += _walk(prop, f"{path}.{name}")
    if "items" in schema:
        found += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _walk(schema["additionalProperties"], f"{path}{{}}")
    return found


@pytest.mark.parametrize(
    "crd",
    [crdgen.route_crd(), crdgen.budget_crd(), crdgen.cluster_budget_crd()],
    ids=["route", "budget", "cluster"],
)
def test_schema_is_documented_and_bounded(crd: dict[str, Any]) -> None:
    """kubectl explain teaches every field; every string, list and map has a bound
    (what keeps the API server's CEL cost estimate finite)."""
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for path, node in _walk(root["properties"][part], part):
            is_item = path.endswith(("[]", "{}"))
            if not is_item:
                assert node.get("description"), f"{path} has no description"
            kind = node.get("type")
            assert kind, f"{path} has no type (not structural)"
            if kind == "string":
                assert "maxLength" in node or "enum" in node or node.get("format"), (
                    f"{path}: unbounded string"
                )
            if kind == "array":
                assert "maxItems" in node, f"{path}: unbounded list"
                assert node.get("x-kubernetes-list-type"), f"{path}: no list type"
            if isinstance(node.get("additionalProperties"), dict):
                assert "maxProperties" in node, f"{path}: unbounded map"


def test_description_overlay_names_real_fields() -> None:
    classes = [
        *reachable_models(LLMRouteSpec),
        *reachable_models(LLMBudgetSpec),
        *reachable_models(ClusterLLMBudgetSpec),
    ]
    for cls, texts in DESCRIPTIONS.items():
        assert any(issubclass(c, cls) for c in classes), f"{cls.__name__} is not in the API"
        aliases = {f.alias or n for n, f in cls.model_fields.items()}
        for alias in texts:
            assert alias in aliases, f"DESCRIPTIONS[{cls.__name__}][{alias!r}]: no such field"


def test_crd_names_short_names_and_category() -> None:
    route = crdgen.route_crd()["spec"]
    budget = crdgen.budget_crd()["spec"]
    cluster = crdgen.cluster_budget_crd()["spec"]
    assert route["names"]["shortNames"] == ["llmr", "llmroute"]
    assert budget["names"]["shortNames"] == ["llmb", "llmbudget"]
    assert cluster["names"]["shortNames"] == ["cllmb", "clusterllmbudget"]
    assert cluster["scope"] == "Cluster" and budget["scope"] == route["scope"] == "Namespaced"
    for kind in (route, budget, cluster):
        assert kind["names"]["categories"] == ["aegis"]
    for spec in (route, budget, cluster):
        version = spec["versions"][0]
        assert version["subresources"] == {"status": {}}
        conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
            "conditions"
        ]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert set(conditions["items"]["required"]) == {
            "type",
            "status",
            "reason",
            "lastTransitionTime",
        }
