"""Builders shared by the injector tests: pods, routes, and a JSONPatch applier."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch  # the RFC 6902 reference implementation (a kopf dependency)

from aegis.operator.injector.route_choice import KeyRef, RouteInfo
from aegis.operator.injector.settings import SidecarSettings

SIDECAR = SidecarSettings(image="registry.invalid/aegis:test", ledger_secret_name="aegis-ledger")


def pod(
    name: str = "web",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": containers or [{"name": "app", "image": "registry.invalid/app:1"}],
            **spec,
        },
    }


def route(
    name: str = "rag",
    namespace: str = "team",
    selector: dict[str, Any] | None = None,
    keys: tuple[KeyRef, ...] = (KeyRef("AEGIS_KEY_OPENAI", "openai", "apiKey"),),
    config_hash: str | None = "abc123",
) -> RouteInfo:
    return RouteInfo(name, namespace, selector, keys, config_hash)


def apply(document: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The document after a JSONPatch (the input is not modified)."""
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(document), ops)
    return result


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """``name -> value or valueFrom`` of a container's env."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}
