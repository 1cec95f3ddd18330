"""One admission request → injected, skipped or refused (a pure function).

Opt-in is decided by the API server first: the MutatingWebhookConfiguration has two
entries, and each calls its own path (``/inject/pod`` for pods labelled
``aegis.io/inject: "true"``, ``/inject/namespace`` for pods in namespaces labelled
``aegis.io/inject: enabled`` that do not opt out). The API server evaluates
``namespaceSelector`` against its own view of namespace labels, so the injector
needs no namespace cache and no namespace RBAC; it re-checks the pod's own label
(opt-out always wins) and never injects into protected namespaces, whatever a
misconfigured webhook object sends it.

Refusals are for pods that asked for a sidecar and cannot get a correct one: running
them without it would silently bypass routing, privacy rules and budgets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..api.naming import INJECT_LABEL, INJECTED_ANNOTATION
from . import patch
from .route_choice import NoRoute, RouteInfo, select_route
from .settings import SidecarSettings

Outcome = Literal["injected", "skipped", "refused"]
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
Via = Literal["pod", "namespace"]


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    outcome: Outcome
    reason: str
    """A short, bounded label (metrics): e.g. ``opt-out``, ``no-route``, ``conflict``."""
    message: str = ""
    patch: list[dict[str, Any]] = field(default_factory=list)
    route: str | None = None


@dataclass(frozen=True, slots=True)
class PodRequest:
    """The parts of an AdmissionReview request the decision looks at."""

    namespace: str
    operation: str
    kind: str
    subresource: str
    pod: Mapping[str, Any]

    @property
    def name(self) -> str:
        meta = self.pod.get("metadata") or {}
        return str(meta.get("name") or (meta.get("generateName") or "<unnamed>-") + "*")


def opt_in(via: Via, labels: Mapping[str, str]) -> AdmissionDecision | None:
    """``None`` when the pod opted in, else the skip decision."""
    value = labels.get(INJECT_LABEL)
    if value == "false":
        return AdmissionDecision("skipped", "opt-out", f"pod label {INJECT_LABEL}=false")
    if via == "pod" and value != "true":
        return AdmissionDecision("skipped", "not-opted-in", f"pod has no label {INJECT_LABEL}=true")
    return None


def already_injected(pod: Mapping[str, Any], settings: SidecarSettings) -> bool:
    """Our annotation and our container are both there (re-invocation, copied manifests)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if INJECTED_ANNOTATION not in annotations:
        return False
    spec = pod.get("spec") or {}
    names = {c.get("name") for k in ("containers", "initContainers") for c in spec.get(k) or []}
    return settings.container_name in names


def decide(
    request: PodRequest,
    via: Via,
    routes: Sequence[RouteInfo] | None,
    settings: SidecarSettings,
    *,
    native: bool,
    version: str,
    never_injected: frozenset[str],
) -> AdmissionDecision:
    """The decision for one request; ``routes`` is ``None`` while the cache is not synced."""
    if request.kind != "Pod" or request.operation != "CREATE" or request.subresource:
        return AdmissionDecision("skipped", "not-pod-create")
    if request.namespace in never_injected:
        return AdmissionDecision(
            "skipped", "protected-namespace", f"namespace {request.namespace} is never injected"
        )
    meta = request.pod.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    skip = opt_in(via, labels)
    if skip is not None:
        return skip
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        # The API object mirrors a kubelet's static pod file: a patch would not run.
        return AdmissionDecision("skipped", "static-pod", "static (mirror) pods cannot be injected")
    if already_injected(request.pod, settings):
        return AdmissionDecision("skipped", "already-injected")
    if routes is None:
        return AdmissionDecision(
            "refused",
            "not-ready",
            "the Aegis injector has not loaded the LLMRoutes yet; retry shortly",
        )
    chosen = select_route(
        request.name, request.namespace, labels, meta.get("annotations") or {}, routes
    )
    if isinstance(chosen, NoRoute):
        return AdmissionDecision("refused", chosen.reason, chosen.message)
    problems = patch.conflicts(request.pod, settings)
    if problems:
        return AdmissionDecision(
            "refused",
            "conflict",
            f"cannot inject the Aegis sidecar into pod {request.name}: " + "; ".join(problems),
            route=chosen.name,
        )
    ops = patch.injection_ops(request.pod, chosen, settings, native=native, version=version)
    return AdmissionDecision("injected", "injected", patch=ops, route=chosen.name)
