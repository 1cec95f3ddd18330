"""One kopf event, start to end: the route's lock taken once, kopf's body used as read.

A change of an ``LLMRoute`` runs, under one lock and on the body each step's
write returned: the manual rollout action (annotation), the reconcile (ConfigMap
and status), and the rollout controller (so ``promote`` and actions take effect
at once). Timers run the reconcile or the rollout controller alone; a budget
change re-renders the routes of its old and new scope, each read once.

kopf's body may lag behind a write another handler made while this one waited for
the lock: every write to the route is conditional on its version (a conflict reads
the route once and starts over), and the one write that is not, the ConfigMap's,
is planned from a route read or written under the lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..kube import Body
from .budget import drop_limit, scope_of, sync_budget
from .context import Context
from .indices import BudgetIndex, RouteIndex
from .rollout import drive_rollout
from .rollout_actions import apply_action
from .route import deleting, reconcile_route, reconcile_routes, route_key
from .tenants import ensure_namespace_ledger


def _key(route: Body) -> tuple[str, str, str]:
    meta = route["metadata"]
    return route_key(meta["namespace"], meta["name"])


async def route_changed(ctx: Context, route: Body, budgets: BudgetIndex) -> None:
    """Created, updated or resumed: the namespace's ledger role, then action, config
    and rollout."""
    await ensure_namespace_ledger(ctx, route["metadata"]["namespace"])
    async with ctx.locks.hold(_key(route)):
        if deleting(route):
            return
        acted = await apply_action(ctx, route)
        if acted is None:
            return
        # A body another step returned is current; kopf's own may lag behind our writes.
        found = await reconcile_route(ctx, acted, budgets, current=acted is not route)
        if found is not None and (found.get("spec") or {}).get("rollout"):
            # promote now, or finish a promotion, without a tick's delay
            await drive_rollout(ctx, found, budgets, current=found is not route)


async def route_resync(ctx: Context, route: Body, budgets: BudgetIndex) -> None:
    """The periodic safety net: Secrets appearing, ConfigMap drift, a ledger Secret
    deleted (rotation)."""
    await ensure_namespace_ledger(ctx, route["metadata"]["namespace"])
    async with ctx.locks.hold(_key(route)):
        await reconcile_route(ctx, route, budgets)


async def rollout_tick(ctx: Context, route: Body, budgets: BudgetIndex) -> None:
    """The rollout timer: analyse the step if its interval has passed."""
    async with ctx.locks.hold(_key(route)):
        await drive_rollout(ctx, route, budgets)


async def budget_changed(
    ctx: Context,
    budget: Body,
    old_spec: Mapping[str, Any] | None,
    routes: RouteIndex,
    budgets: BudgetIndex,
) -> None:
    """Created or updated: its status, then every route its old or new scope reaches."""
    namespace = budget["metadata"]["namespace"]
    await sync_budget(ctx, budget, routes, budgets)
    affected = scope_of(namespace, budget.get("spec"), ctx)
    if old_spec is not None:
        affected |= scope_of(namespace, old_spec, ctx)
    await reconcile_routes(ctx, affected, routes, budgets)


async def budget_deleted(
    ctx: Context, budget: Body, routes: RouteIndex, budgets: BudgetIndex
) -> None:
    """Drop it from the ledger and re-render the routes it applied to (the index no
    longer holds it)."""
    meta = budget["metadata"]
    ctx.metrics.forget_budget(meta["namespace"], meta["name"])
    await drop_limit(ctx, meta["namespace"], meta["name"])
    await reconcile_routes(
        ctx, scope_of(meta["namespace"], budget.get("spec"), ctx), routes, budgets
    )
