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
from .controllers.budget import applied_budget, scope_of, sync_budget
from .controllers.context import context
from .controllers.render import AppliedBudget
from .controllers.rollout import drive_rollout
from .controllers.rollout_actions import apply_action
from .controllers.route import (
    BudgetIndex,
    RouteIndex,
    RouteRef,
    cleanup_route,
    reconcile_route,
    reconcile_routes,
)
from .kube import ConfigError, credentials, load_config

ROUTES = (naming.GROUP, naming.VERSION, naming.ROUTE_PLURAL)
BUDGETS = (naming.GROUP, naming.VERSION, naming.BUDGET_PLURAL)
#: Seconds before kopf retries a handler that raised (API errors are transient).
RETRY_BACKOFF = 5.0


#: Default for index arguments: kopf always passes every index, but its callback
#: types do not know ours, so the parameters need a default to type-check.
NO_INDEX: Mapping[str, Any] = MappingProxyType({})


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
    view = applied_budget(_ns(namespace), name, spec, platform)
    return None if view is None else dict.fromkeys(view.scope, view)


# -- LLMRoute --------------------------------------------------------------------


async def route_changed(
    *,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    memo: Any,
    budget_index: BudgetIndex = NO_INDEX,
    **_: Any,
) -> None:
    ctx, ns = context(memo), _ns(namespace)
    if naming.ROLLOUT_ACTION_ANNOTATION in (meta.get("annotations") or {}):
        await apply_action(ctx, ns, name)
    await reconcile_route(ctx, ns, name, budget_index)
    if spec.get("rollout"):  # promote now, or finish a promotion, without a tick's delay
        await drive_rollout(ctx, ns, name, budget_index)


async def route_resync(
    *, namespace: str | None, name: str, memo: Any, budget_index: BudgetIndex = NO_INDEX, **_: Any
) -> None:
    await reconcile_route(context(memo), _ns(namespace), name, budget_index)


async def rollout_timer(
    *, namespace: str | None, name: str, memo: Any, budget_index: BudgetIndex = NO_INDEX, **_: Any
) -> None:
    await drive_rollout(context(memo), _ns(namespace), name, budget_index)


async def route_deleted(
    *, namespace: str | None, name: str, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    await cleanup_route(context(memo), _ns(namespace), name, meta.get("uid"))


# -- LLMBudget -------------------------------------------------------------------


async def budget_changed(
    *,
    namespace: str | None,
    name: str,
    old: Any,
    new: Any,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    budget_index: BudgetIndex = NO_INDEX,
    **_: Any,
) -> None:
    ctx, ns = context(memo), _ns(namespace)
    await sync_budget(ctx, ns, name, route_index, budget_index)
    affected = scope_of(ns, (new or {}).get("spec"), ctx)
    if old:
        affected |= scope_of(ns, old.get("spec"), ctx)
    await reconcile_routes(ctx, affected, route_index, budget_index)


async def budget_resumed(
    *,
    namespace: str | None,
    name: str,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    budget_index: BudgetIndex = NO_INDEX,
    **_: Any,
) -> None:
    # Routes resume on their own with every budget indexed; only the status is due.
    await sync_budget(context(memo), _ns(namespace), name, route_index, budget_index)


async def budget_timer(
    *,
    namespace: str | None,
    name: str,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    budget_index: BudgetIndex = NO_INDEX,
    **_: Any,
) -> None:
    await sync_budget(context(memo), _ns(namespace), name, route_index, budget_index)


async def budget_deleted(
    *,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    memo: Any,
    route_index: RouteIndex = NO_INDEX,
    budget_index: BudgetIndex = NO_INDEX,
    **_: Any,
) -> None:
    ctx, ns = context(memo), _ns(namespace)
    ctx.metrics.forget_budget(ns, name)
    # The index no longer holds the budget (it dropped it on deletionTimestamp).
    await reconcile_routes(ctx, scope_of(ns, spec, ctx), route_index, budget_index)


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
) -> None:
    """Register every handler on ``registry``."""
    common: dict[str, Any] = {"registry": registry, "backoff": RETRY_BACKOFF}
    kopf.on.login(registry=registry)(login)
    kopf.index(*ROUTES, registry=registry)(route_index)
    kopf.index(*BUDGETS, registry=registry)(budget_index)

    kopf.on.resume(*ROUTES, **common)(route_changed)
    kopf.on.create(*ROUTES, **common)(route_changed)
    kopf.on.update(*ROUTES, **common)(route_changed)
    kopf.on.delete(*ROUTES, **common)(route_deleted)
    kopf.timer(*ROUTES, interval=resync, initial_delay=resync, **common)(route_resync)
    kopf.timer(*ROUTES, interval=rollout_tick, field="spec.rollout", value=kopf.PRESENT, **common)(
        rollout_timer
    )

    kopf.on.resume(*BUDGETS, **common)(budget_resumed)
    kopf.on.create(*BUDGETS, **common)(budget_changed)
    kopf.on.update(*BUDGETS, **common)(budget_changed)
    kopf.on.delete(*BUDGETS, **common)(budget_deleted)
    kopf.timer(*BUDGETS, interval=budget_interval, **common)(budget_timer)
