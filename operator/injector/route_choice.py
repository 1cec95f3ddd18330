"""Which ``LLMRoute`` a pod uses: the annotation, else the one whose podSelector matches.

The injector keeps, per route, only what admission needs (selector, the Secret
references of provider keys, the config hash); :func:`route_info` extracts that from
an ``LLMRoute`` object, and :func:`select_route` is the pure choice. Its refusals say
what is wrong with the pod and how to fix it, but name no route and no selector: whoever
may create a pod need not be able to read the namespace's LLMRoutes (``kubectl get
llmroutes`` shows them to those who may).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..api.naming import ROUTE_ANNOTATION, key_env_var
from .selectors import SelectorError, matches


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A provider's API key: env var name in the sidecar, and the Secret it comes from."""

    env: str
    secret_name: str
    secret_key: str


@dataclass(frozen=True, slots=True)
class RouteInfo:
    name: str
    namespace: str
    pod_selector: Mapping[str, Any] | None
    keys: tuple[KeyRef, ...]
    config_hash: str | None
    """From ``status.configHash`` (written by the operator with the ConfigMap);
    ``None`` until the operator has rendered the route."""


@dataclass(frozen=True, slots=True)
class NoRoute:
    """Why no single route applies; ``reason`` is a metric label, ``message`` for people."""

    reason: str
    message: str


def route_info(obj: Mapping[str, Any]) -> RouteInfo | None:
    """The admission-relevant part of an LLMRoute (``None`` when it is being deleted)."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    spec = obj.get("spec") or {}
    keys = []
    for provider in spec.get("providers") or []:
        ref = provider.get("apiKeySecretRef")
        if ref and provider.get("name"):
            keys.append(KeyRef(key_env_var(provider["name"]), ref["name"], ref["key"]))
    status = obj.get("status") or {}
    return RouteInfo(
        name=meta["name"],
        namespace=meta.get("namespace", ""),
        pod_selector=spec.get("podSelector"),
        keys=tuple(keys),
        config_hash=status.get("configHash") or None,
    )


def select_route(
    pod_name: str,
    namespace: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    routes: Sequence[RouteInfo],
) -> RouteInfo | NoRoute:
    """The route for a pod, or why there is none (several matching is a refusal too)."""
    ordered = sorted(routes, key=lambda r: r.name)
    named = annotations.get(ROUTE_ANNOTATION)
    if named:
        for route in ordered:
            if route.name == named:
                return route
        return NoRoute(
            "unknown-route",
            f"pod {pod_name} names LLMRoute {named!r} in annotation {ROUTE_ANNOTATION}, "
            f"but namespace {namespace} has no such LLMRoute",
        )
    selected: list[RouteInfo] = []
    for route in ordered:
        try:
            if matches(route.pod_selector, labels):
                selected.append(route)
        except SelectorError:
            continue  # the API server validates selectors; a bad one selects nothing
    if len(selected) == 1:
        return selected[0]
    shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"
    if not selected:
        return NoRoute(
            "no-route",
            f"pod {pod_name} opted in to Aegis but no LLMRoute in namespace {namespace} "
            f"selects it (pod labels: {shown}); create an LLMRoute whose podSelector "
            f"matches, or set annotation {ROUTE_ANNOTATION}",
        )
    return NoRoute(
        "multiple-routes",
        f"pod {pod_name} is selected by {len(selected)} LLMRoutes in namespace {namespace}; "
        f"narrow their podSelectors or choose one with annotation {ROUTE_ANNOTATION}",
    )
