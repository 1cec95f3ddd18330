"""The kopf handlers: thin functions that call the reconcilers.

Registered on an explicit :class:`kopf.OperatorRegistry` by :func:`register`
(intervals come from the command line, so registration happens at start-up,
not at import). Two in-memory indices feed the cross-object work:

- ``budget_index``: namespace (or ``*``) → the LLMBudgets that may apply to
  routes there. A route renders with the budgets of its namespace; kopf fills
  every index before it runs the first change handler, so a restart renders
  with all budgets known.
- ``route_index``: namespace → the routes there and their provider names. A
  budget change re-renders the routes of every namespace in its old and new
  scope, and budget status lists the routes that enforce it.

Every LLMRoute and LLMBudget gets the finalizer ``aegis.io/cleanup``: deletion
waits for the operator to delete the route's ConfigMap (or re-render the routes
a budget applied to), because no garbage collector is assumed.

Routes with ``spec.rollout`` also get a timer (every ``rollout_tick`` seconds)
that runs the rollout controller; it analyses a step only once the step's own
``interval`` has passed, so the tick only bounds how late an analysis may be.
A change runs the controller too, so ``promote`` and the annotation
``aegis.io/rollout-action`` take effect at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import kopf

from .api import naming
from .controllers import (
    AppliedBudget,
    BudgetIndex,
    BudgetView,
    ClusterBudgetIndex,
    ClusterBudgetRef,
    Indices,
    NamespaceIndex,
    RouteIndex,
    RouteRef,
    applied_budget,
    cleanup_route,
    cluster_budget,
    cluster_ref,
    context,
    lifecycle,
    sync_budget,
)
from .kube import ConfigError, credentials, load_config
from .tracing import Handler, ReconcileTracer

ROUTES = (naming.GROUP, naming.VERSION, naming.ROUTE_PLURAL)
BUDGETS = (naming.GROUP, naming.VERSION, naming.BUDGET_PLURAL)
CLUSTER_BUDGETS = (naming.GROUP, naming.VERSION, naming.CLUSTER_BUDGET_PLURAL)
NAMESPACES = ("", "v1", "namespaces")
#: Seconds before kopf retries a handler that raised (API errors are transient).
RETRY_BACKOFF = 5.0


#: Default for index arguments: kopf always passes every index, but its callback
#: types do not know ours, so the parameters need a default to type-check.
NO_INDEX: Mapping[str, Any] = MappingProxyType({})
ALL = "*"


def _deleting(meta: kopf.Meta) -> bool:
    return bool(meta.get("deletionTimestamp"))


def _ns(namespace: str | None) -> str:
    if namespace is None:  # LLMRoute and LLMBudget are namespaced
        raise kopf.PermanentError("a namespaced object without a namespace")
    return namespace


# -- indices ---------------------------------------------------------------------


def route_index(
    *, namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any
) -> dict[str, RouteRef] | None:
    if _deleting(meta):
        return None
    providers = tuple(
        str(p["name"]) for p in spec.get("providers") or [] if isinstance(p, dict) and "name" in p
    )
    return {_ns(namespace): RouteRef(_ns(namespace), name, providers)}


def budget_index(
    *, namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta, memo: Any, **_: Any
) -> dict[str, AppliedBudget] | None:
    if _deleting(meta):
        return None
    platform = context(memo).options.platform_namespace
    applied = applied_budget(_ns(namespace), name, spec, platform)
    return None if applied is None else dict.fromkeys(applied.scope, applied)


def cluster_budget_index(
    *, name: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any
) -> dict[str, ClusterBudgetRef] | None:
    if _deleting(meta):
        return None
    ref = cluster_ref(name, spec)
    return None if ref is None else {ALL: ref}


def namespace_index(*, name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}


def _view(
    budgets: BudgetIndex, clusters: ClusterBudgetIndex, namespaces: NamespaceIndex
) -> BudgetView:
    """Every budget a route may render: its namespace's, the platform's, the cluster's."""
    return BudgetView(budgets, clusters, namespaces)


def _indices(
    routes: RouteIndex,
    budgets: BudgetIndex,
    clusters: ClusterBudgetIndex,
    namespaces: NamespaceIndex,
) -> Indices:
    return Indices(routes, budgets, clusters, namespaces)


# -- LLMRoute --------------------------------------------------------------------


def _object(body: kopf.Body) -> dict[str, Any]:
    """kopf's body as the controllers take it: the object as last read."""
    return dict(body)


async def route_changed(
    *,
    body: kopf.Body,
    memo: Any,
    budget_index: BudgetIndex = NO_INDEX,
    cluster_budget_index: ClusterBudgetIndex = NO_INDEX,
    namespace_index: NamespaceIndex = NO_INDEX,
    **_: Any,
) -> None:
    budgets = _view(budget_index, cluster_budget_index, namespace_index)
    await lifecycle.route_changed(context(memo), _object(body), budgets)


async def route_resync(
    *,
    body: kopf.Body,
    memo: Any,
    budget_index: BudgetIndex = NO_INDEX,
    cluster_budget_index: ClusterBudgetIndex = NO_INDEX,
    namespace_index: NamespaceIndex = NO_INDEX,
    **_: Any,
) -> None:
    budgets = _view(budget_index, cluster_budget_index, namespace_index)
    await lifecycle.route_resync(context(memo), _object(body), budgets)


async def rollout_timer(
    *,
    body: kopf.Body,
    memo: Any,
    budget_index: BudgetIndex = NO_INDEX,
    cluster_budget_index: ClusterBudgetIndex = NO_INDEX,
    namespace_index: NamespaceIndex = NO_INDEX,
    **_: Any,
) -> None:
    budgets = _view(budget_index, cluster_budget_index, namespace_index)
    await lifecycle.rollout_tick(context(memo), _object(body), budgets)


async def route_deleted(
    *, namespace: str | None, name: str, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    await cleanup_route(context(memo), _ns(namespace), name, meta.get("uid"))


# -- LLMBudget -------------------------------------------------------------------


async def budget_changed(
    *,
    body: kopf.Body,
    old: Any,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    budget_index: BudgetIndex = NO_INDEX,
    cluster_budget_index: ClusterBudgetIndex = NO_INDEX,
    namespace_index: NamespaceIndex = NO_INDEX,
    **_: Any,
) -> None:
    old_spec = old.get("spec") if old else None
    budgets = _view(budget_index, cluster_budget_index, namespace_index)
    await lifecycle.budget_changed(context(memo), _object(body), old_spec, route_index, budgets)


async def budget_synced(
    *,
    body: kopf.Body,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    budget_index: BudgetIndex = NO_INDEX,
    **_: Any,
) -> None:
    """Resumed, or the ledger timer: only the status is due (routes resume on their
    own with every budget indexed)."""
    await sync_budget(context(memo), _object(body), route_index, budget_index)


async def budget_deleted(
    *,
    body: kopf.Body,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    budget_index: BudgetIndex = NO_INDEX,
    cluster_budget_index: ClusterBudgetIndex = NO_INDEX,
    namespace_index: NamespaceIndex = NO_INDEX,
    **_: Any,
) -> None:
    # The index no longer holds the budget (it dropped it on deletionTimestamp).
    budgets = _view(budget_index, cluster_budget_index, namespace_index)
    await lifecycle.budget_deleted(context(memo), _object(body), route_index, budgets)


# -- ClusterLLMBudget and Namespaces ---------------------------------------------


async def cluster_budget_changed(
    *,
    body: kopf.Body,
    old: Any,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    budget_index: BudgetIndex = NO_INDEX,
    cluster_budget_index: ClusterBudgetIndex = NO_INDEX,
    namespace_index: NamespaceIndex = NO_INDEX,
    **_: Any,
) -> None:
    old_spec = old.get("spec") if old else None
    indices = _indices(route_index, budget_index, cluster_budget_index, namespace_index)
    await cluster_budget.cluster_budget_changed(context(memo), _object(body), old_spec, indices)


async def cluster_budget_synced(
    *,
    body: kopf.Body,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    namespace_index: NamespaceIndex = NO_INDEX,
    **_: Any,
) -> None:
    """Resumed, or the ledger timer: the spenders, the limit and the status."""
    await cluster_budget.sync_cluster_budget(
        context(memo), _object(body), namespace_index, route_index
    )


async def cluster_budget_deleted(
    *,
    body: kopf.Body,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    budget_index: BudgetIndex = NO_INDEX,
    cluster_budget_index: ClusterBudgetIndex = NO_INDEX,
    namespace_index: NamespaceIndex = NO_INDEX,
    **_: Any,
) -> None:
    indices = _indices(route_index, budget_index, cluster_budget_index, namespace_index)
    await cluster_budget.cluster_budget_deleted(context(memo), _object(body), indices)


async def namespace_event(
    *,
    name: str,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    budget_index: BudgetIndex = NO_INDEX,
    cluster_budget_index: ClusterBudgetIndex = NO_INDEX,
    namespace_index: NamespaceIndex = NO_INDEX,
    **_: Any,
) -> None:
    """Any event of a Namespace (watched only: nothing is ever written to it)."""
    indices = _indices(route_index, budget_index, cluster_budget_index, namespace_index)
    await cluster_budget.namespace_changed(context(memo), name, indices)


async def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's API session logs in with the credentials of the operator's own client
    (:func:`aegis.operator.kube.load_config`): one login path for both."""
    try:
        config = await asyncio.to_thread(load_config)  # reads files; keep the loop free
        found = await credentials(config)
    except ConfigError as error:
        raise kopf.LoginError(str(error)) from error
    return kopf.ConnectionInfo(**dataclasses.asdict(found))


def register(
    registry: kopf.OperatorRegistry,
    budget_interval: float,
    resync: float,
    rollout_tick: float = 10.0,
    tracer: ReconcileTracer | None = None,
) -> None:
    """Register every handler on ``registry`` (each in a span when ``tracer`` is given)."""
    common: dict[str, Any] = {"registry": registry, "backoff": RETRY_BACKOFF}
    kopf.on.login(registry=registry)(login)
    kopf.index(*ROUTES, registry=registry)(route_index)
    kopf.index(*BUDGETS, registry=registry)(budget_index)
    kopf.index(*CLUSTER_BUDGETS, registry=registry)(cluster_budget_index)
    kopf.index(*NAMESPACES, registry=registry)(namespace_index)

    def route(event: str, handler: Handler) -> Handler:
        return tracer.wrap(naming.ROUTE_KIND, event, handler) if tracer else handler

    def budget(event: str, handler: Handler) -> Handler:
        return tracer.wrap(naming.BUDGET_KIND, event, handler) if tracer else handler

    def cluster(event: str, handler: Handler) -> Handler:
        return tracer.wrap(naming.CLUSTER_BUDGET_KIND, event, handler) if tracer else handler

    kopf.on.resume(*ROUTES, **common)(route("resume", route_changed))
    kopf.on.create(*ROUTES, **common)(route("create", route_changed))
    kopf.on.update(*ROUTES, **common)(route("update", route_changed))
    kopf.on.delete(*ROUTES, **common)(route("delete", route_deleted))
    kopf.timer(*ROUTES, interval=resync, initial_delay=resync, **common)(
        route("resync", route_resync)
    )
    kopf.timer(*ROUTES, interval=rollout_tick, field="spec.rollout", value=kopf.PRESENT, **common)(
        route("rollout", rollout_timer)
    )

    kopf.on.resume(*BUDGETS, **common)(budget("resume", budget_synced))
    kopf.on.create(*BUDGETS, **common)(budget("create", budget_changed))
    kopf.on.update(*BUDGETS, **common)(budget("update", budget_changed))
    kopf.on.delete(*BUDGETS, **common)(budget("delete", budget_deleted))
    kopf.timer(*BUDGETS, interval=budget_interval, **common)(budget("sync", budget_synced))

    kopf.on.resume(*CLUSTER_BUDGETS, **common)(cluster("resume", cluster_budget_synced))
    kopf.on.create(*CLUSTER_BUDGETS, **common)(cluster("create", cluster_budget_changed))
    kopf.on.update(*CLUSTER_BUDGETS, **common)(cluster("update", cluster_budget_changed))
    kopf.on.delete(*CLUSTER_BUDGETS, **common)(cluster("delete", cluster_budget_deleted))
    kopf.timer(*CLUSTER_BUDGETS, interval=budget_interval, **common)(
        cluster("sync", cluster_budget_synced)
    )
    # Watched, never changed: kopf.on.event keeps no state on the Namespace objects.
    kopf.on.event(*NAMESPACES, registry=registry)(namespace_event)
