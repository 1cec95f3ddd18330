"""The Aegis sidecar injector: a mutating admission webhook for pods (``aegis injector``).

Why a standalone server and not kopf's ``@kopf.on.mutate`` inside the operator: pod
creation of every opted-in workload depends on this webhook (``failurePolicy: Fail``),
so it must run with two or more replicas behind a Service, while the operator runs
as a single replica (kopf peering). Tying admission to the operator process would
make an operator restart or rollout block pod creation cluster-wide.

Layout (decisions are pure functions, I/O sits at the edges):

- :mod:`.settings`     flags/env → frozen settings (what Helm values feed)
- :mod:`.selectors`    Kubernetes LabelSelector matching
- :mod:`.route_choice` LLMRoute objects → :class:`RouteInfo`; which route a pod uses
- :mod:`.patch`        the sidecar container, volumes and env as JSONPatch operations
- :mod:`.admission`    one AdmissionReview request → injected / skipped / refused
- :mod:`.review`       the AdmissionReview v1 wire format
- :mod:`.certs`        CA and serving certificates (``cryptography``), rotation plan
- :mod:`.manifests`    MutatingWebhookConfiguration and RBAC as renderable objects
- :mod:`.cache`        informer-style LLMRoute cache (list + watch), no API call per review
- :mod:`.tls`          serving-certificate sources: a shared Secret, or files (cert-manager)
- :mod:`.webhook`      the aiohttp application, metrics and the run loop
- :mod:`.command`      ``aegis injector``; :mod:`.doc` the generated part of its docs
- :mod:`.probe`        ``aegis probe``: the sidecar's exec health check

Only the settings and the probe load with the package: ``aegis probe`` runs every few
seconds in every injected pod, so the rest loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..api.lazy import on_first_use
from .probe import probe
from .settings import InjectorSettings, ServerSettings, SidecarSettings, add_arguments, from_args

if TYPE_CHECKING:
    from .admission import AdmissionDecision, PodRequest, decide
    from .cache import RouteCache, StaticRoutes
    from .command import rendered_manifests, run_injector
    from .manifests import rbac, webhook_configuration
    from .route_choice import KeyRef, RouteInfo, route_info, select_route
    from .webhook import Injector, build_app, build_metrics_app, run_forever, serve

_ON_FIRST_USE = {
    "AdmissionDecision": "admission",
    "Injector": "webhook",
    "KeyRef": "route_choice",
    "PodRequest": "admission",
    "RouteCache": "cache",
    "RouteInfo": "route_choice",
    "StaticRoutes": "cache",
    "build_app": "webhook",
    "build_metrics_app": "webhook",
    "decide": "admission",
    "rbac": "manifests",
    "rendered_manifests": "command",
    "route_info": "route_choice",
    "run_forever": "webhook",
    "run_injector": "command",
    "select_route": "route_choice",
    "serve": "webhook",
    "webhook_configuration": "manifests",
}

__all__ = [
    "AdmissionDecision",
    "Injector",
    "InjectorSettings",
    "KeyRef",
    "PodRequest",
    "RouteCache",
    "RouteInfo",
    "ServerSettings",
    "SidecarSettings",
    "StaticRoutes",
    "add_arguments",
    "build_app",
    "build_metrics_app",
    "decide",
    "from_args",
    "probe",
    "rbac",
    "rendered_manifests",
    "route_info",
    "run_forever",
    "run_injector",
    "select_route",
    "serve",
    "webhook_configuration",
]


__getattr__ = on_first_use(__name__, _ON_FIRST_USE)
