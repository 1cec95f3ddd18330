"""``ClusterLLMBudget``: its limit and spenders in the ledger, its routes, its status.

Read: the budget as kopf handed it over and the namespaces' labels (kopf's
index). Plan (pure): the namespaces its selector matches, the period, then the
status from the ledger's figures (:func:`~.budget_plan.plan_spend`, shared with
``LLMBudget``). Apply: ``aegis.set_budget`` for the key ``(Cluster, "", name)``
with those namespaces as spenders (``*`` without a selector), the status, the
gauges (namespace label empty) and the events. Deleted or invalid: dropped from
the ledger, so no sidecar can spend it any more; its history stays.

The routes of every namespace it reaches render it (:class:`~.cluster_scope.BudgetView`);
a change of the budget, of a namespace's labels, or a namespace coming or going
re-renders the routes of the namespaces whose set of cluster budgets changed and
re-syncs the budgets whose set of namespaces changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from aegis.sidecar.contract import BudgetKey, BudgetScope

from ..kube import Body, ClusterLLMBudget, Conflict
from . import events
from .budget import drop_key, read_spend
from .budget_plan import BudgetPlan, current_period, plan_invalid, plan_spend, routes_enforcing
from .cluster_scope import (
    ClusterBudgetIndex,
    ClusterBudgetRef,
    Indices,
    NamespaceIndex,
    cluster_budgets_of,
    parse_cluster_budget,
    selected,
    spenders,
)
from .context import Context
from .indices import RouteIndex
from .render import ALL_NAMESPACES, describe_validation_error
from .route import reconcile_routes

KIND = "ClusterLLMBudget"
log = logging.getLogger(__name__)


def cluster_key(name: str) -> BudgetKey:
    """A ClusterLLMBudget's key in the ledger."""
    return BudgetKey(BudgetScope.CLUSTER, "", name)


def reach(spec: Mapping[str, Any] | None, name: str, namespaces: NamespaceIndex) -> set[str]:
    """Namespaces whose routes a ClusterLLMBudget body renders (for fan-out)."""
    try:
        parsed = parse_cluster_budget(name, spec)
    except ValidationError:
        return set()
    return set(selected(parsed, namespaces))


async def _apply(ctx: Context, budget: Body, plan: BudgetPlan) -> None:
    name = budget["metadata"]["name"]
    if plan.gauges is not None:
        ctx.metrics.set_budget("", name, *plan.gauges)
    if plan.status is not None:
        try:
            await ctx.kube.merge_patch(ClusterLLMBudget, name, plan.status, status=True)
        except Conflict:  # changed meanwhile: the next tick sees the new one
            return
    outcome = "changed" if plan.status is not None else "unchanged"
    ctx.metrics.reconciles.labels(KIND, outcome).inc()
    for event in plan.events:
        events.post(budget, *event)


async def sync_cluster_budget(
    ctx: Context, budget: Body, namespaces: NamespaceIndex, routes: RouteIndex
) -> None:
    """Write the limit and spenders, read the ledger, write status, gauges and events."""
    meta = budget["metadata"]
    name = meta["name"]
    async with ctx.locks.hold((KIND, name)):
        if meta.get("deletionTimestamp"):
            return
        now, heartbeat = ctx.now(), ctx.options.sync_heartbeat
        try:
            spec = parse_cluster_budget(name, budget.get("spec"))
        except ValidationError as error:
            await drop_key(ctx, cluster_key(name))
            message = describe_validation_error(error)
            await _apply(ctx, budget, plan_invalid(budget, message, heartbeat=heartbeat, now=now))
            return
        who = spenders(spec, namespaces)
        matched = selected(spec, namespaces)
        applied = ClusterBudgetRef(name, spec).applied(
            [ALL_NAMESPACES] if who == [ALL_NAMESPACES] else matched
        )
        period = current_period(spec, now)
        ledger = await read_spend(ctx, cluster_key(name), applied.spec, who, period)
        fields: Body = {
            "namespaces": ",".join(matched)[:8192] or None,
            "namespaceCount": len(matched),
            "routes": (routes_enforcing(applied, routes) or "")[:4096] or None,
        }
        plan = plan_spend(
            budget, applied.spec, period, ledger, fields, heartbeat=heartbeat, now=now
        )
        await _apply(ctx, budget, plan)


async def cluster_budget_changed(
    ctx: Context, budget: Body, old_spec: Mapping[str, Any] | None, indices: Indices
) -> None:
    """Created or updated: its ledger entry and status, then the routes of every
    namespace its old or new selector reaches."""
    name = budget["metadata"]["name"]
    await sync_cluster_budget(ctx, budget, indices.namespaces, indices.routes)
    remember_reach(ctx, indices.clusters, indices.namespaces)
    affected = reach(budget.get("spec"), name, indices.namespaces)
    if old_spec is not None:
        affected |= reach(old_spec, name, indices.namespaces)
    await reconcile_routes(ctx, affected, indices.routes, indices.view)


async def cluster_budget_deleted(ctx: Context, budget: Body, indices: Indices) -> None:
    """Drop it from the ledger and re-render the routes it reached (the index no
    longer holds it)."""
    name = budget["metadata"]["name"]
    ctx.metrics.forget_budget("", name)
    await drop_key(ctx, cluster_key(name))
    remember_reach(ctx, indices.clusters, indices.namespaces)
    affected = reach(budget.get("spec"), name, indices.namespaces)
    await reconcile_routes(ctx, affected, indices.routes, indices.view)


def remember_reach(ctx: Context, clusters: ClusterBudgetIndex, namespaces: NamespaceIndex) -> None:
    """What each namespace is reached by now, after a cluster budget changed (the
    next namespace event compares with it)."""
    ctx.cluster_reach.clear()
    for namespace in namespaces:
        ctx.cluster_reach[namespace] = cluster_budgets_of(clusters, namespaces, namespace)


async def namespace_changed(ctx: Context, namespace: str, indices: Indices) -> None:
    """A namespace appeared, changed its labels or went away: when the set of cluster
    budgets reaching it changed (``ctx.cluster_reach`` keeps the last one), re-sync
    those budgets (their spenders) and re-render the namespace's routes."""
    now_reaching = cluster_budgets_of(indices.clusters, indices.namespaces, namespace)
    before = ctx.cluster_reach.get(namespace, frozenset())
    if namespace in indices.namespaces:
        ctx.cluster_reach[namespace] = now_reaching
    else:
        ctx.cluster_reach.pop(namespace, None)
    changed = before ^ now_reaching
    if not changed:
        return
    log.info("namespace %s: cluster budgets now %s", namespace, sorted(now_reaching))
    for name in sorted(changed):
        body = await ctx.kube.get(ClusterLLMBudget, name)
        if body is not None:
            await sync_cluster_budget(ctx, body, indices.namespaces, indices.routes)
    await reconcile_routes(ctx, [namespace], indices.routes, indices.view)
