"""Reconciling an ``LLMRoute``: its ConfigMap, its status, its events.

Level-triggered, in three steps: render and read (the route as kopf handed it
over or as read once, the budgets from the index, the ConfigMap, the key names of
the Secrets the config refers to), decide in pure code
(:func:`~.route_plan.plan_route`), then apply the plan: the ConfigMap, the
status, the events. Whatever woke it up (a change, a budget change, the resync
timer, a restart), running it twice in a row writes nothing the second time.

Every write to the route is conditional on the version read; a conflict means
someone changed the route or the ConfigMap meanwhile, and the route is read again
and the reconcile starts over (at most three times). The ConfigMap write is
planned from a route read or written under the lock, never from a kopf body that
may lag behind another handler's write. The rollout state
(``status.rollout``) is kept in line with ``spec.rollout``
(:mod:`aegis.operator.rollout.state`) and rendered into the config.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from ..api import naming
from ..kube import Body, ConfigMap, Conflict, KubeError, LLMRoute, Transient
from . import events
from .context import Context
from .indices import BudgetIndex, RouteIndex, budgets_for, refs_in
from .route_plan import Prepared, RoutePlan, SecretKeys, owned_by, plan_route, prepare

log = logging.getLogger(__name__)

_ATTEMPTS = 3
T = TypeVar("T")


def route_key(namespace: str, name: str) -> tuple[str, str, str]:
    """The lock every writer of one route holds."""
    return ("LLMRoute", namespace, name)


def deleting(obj: Body) -> bool:
    """The object is waiting for its finalizer: nothing is rendered for it any more."""
    return bool(obj["metadata"].get("deletionTimestamp"))


async def read_route(ctx: Context, namespace: str, name: str) -> Body | None:
    """The route as the API has it now (``None``: gone)."""
    return await ctx.kube.get(LLMRoute, name, namespace=namespace)


async def _read_secrets(
    ctx: Context, namespace: str, names: Iterable[str]
) -> dict[str, SecretKeys]:
    """The key names of each Secret (values are never read into the plan)."""
    found: dict[str, SecretKeys] = {}
    for name in names:
        try:
            found[name] = SecretKeys(keys=await ctx.kube.secret_keys(name, namespace=namespace))
        except Transient:
            raise
        except KubeError as error:
            found[name] = SecretKeys(denied=str(error))
    return found


async def _gather(
    ctx: Context, route: Body, prepared: Prepared
) -> tuple[Body | None, dict[str, SecretKeys] | None]:
    """What the rendering refers to: the route's ConfigMap and, when the operator
    checks them, its Secrets' key names (``None``: not checked)."""
    if prepared.rendered is None:
        return None, {}
    meta = route["metadata"]
    namespace = meta["namespace"]
    cm_name = naming.configmap_name(meta["name"])
    configmap = await ctx.kube.get(ConfigMap, cm_name, namespace=namespace)
    if not ctx.options.check_secrets:
        return configmap, None
    return configmap, await _read_secrets(ctx, namespace, prepared.secrets)


async def _apply(ctx: Context, route: Body, plan: RoutePlan) -> Body:
    """Write what ``plan`` says; the route as written."""
    meta = route["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if plan.configmap is not None:
        write = plan.configmap
        if write.create:
            await ctx.kube.create(ConfigMap, write.body)
        else:
            cm_name = naming.configmap_name(name)
            await ctx.kube.merge_patch(ConfigMap, cm_name, write.body, namespace=namespace)
        # Announced as soon as it happened (a retry after a conflict would not see it again).
        events.post(route, *write.event)
    if plan.status is not None:
        route = await ctx.kube.merge_patch(
            LLMRoute, name, plan.status, namespace=namespace, status=True
        )
    ctx.metrics.set_route_ready(namespace, name, plan.ready)
    ctx.metrics.reconciles.labels("LLMRoute", plan.outcome).inc()
    if plan.rollout_known:
        ctx.metrics.set_rollout(namespace, name, plan.rollout)
    for event in plan.events:  # after the write: a retry would post them again
        events.post(route, *event)
    return route


async def with_current_route(
    ctx: Context, route: Body, step: Callable[[Body, bool], Awaitable[T]]
) -> T | None:
    """Run ``step(route, current)``; when a conditional write finds the route changed
    since it was read (409), read it once more and run the step again (at most three
    times). ``current`` is ``False`` for the body as given, ``True`` once read here.
    ``None`` when the route is gone or being deleted."""
    meta = route["metadata"]
    found: Body | None = route
    current = False
    for attempt in range(1, _ATTEMPTS + 1):
        if found is None or deleting(found):
            return None
        try:
            return await step(found, current)
        except Conflict:
            if attempt == _ATTEMPTS:
                raise
        found, current = await read_route(ctx, meta["namespace"], meta["name"]), True
    return None  # pragma: no cover (the last attempt returns or raises)


async def _reconcile_once(
    ctx: Context, route: Body, budgets: BudgetIndex, current: bool
) -> Body | None:
    namespace = route["metadata"]["namespace"]
    prepared = prepare(route, budgets_for(budgets, namespace), ctx.now())
    configmap, secrets = await _gather(ctx, route, prepared)
    plan = plan_route(route, prepared, configmap, secrets, ctx.now())
    if plan.configmap is not None and not current:
        # The ConfigMap write is not conditional on the route: render from the route
        # as it is now, never from a body another writer has overtaken (that would
        # hand the sidecars an older rollout weight for a moment).
        latest = await read_route(ctx, namespace, route["metadata"]["name"])
        if latest is None or deleting(latest):
            return None
        if latest["metadata"]["resourceVersion"] != route["metadata"]["resourceVersion"]:
            return await _reconcile_once(ctx, latest, budgets, True)
    return await _apply(ctx, route, plan)


async def reconcile_route(
    ctx: Context, route: Body, budgets: BudgetIndex, *, current: bool = False
) -> Body | None:
    """Bring the route's ConfigMap and status in line with its spec and budgets; the
    route as written (``None`` when it is gone or being deleted). ``current``: the
    body is this operator's own last write or read (not kopf's, which may lag). The
    caller holds the route's lock."""

    async def once(found: Body, fresh: bool) -> Body | None:
        return await _reconcile_once(ctx, found, budgets, current or fresh)

    try:
        return await with_current_route(ctx, route, once)
    except KubeError:
        ctx.metrics.reconciles.labels("LLMRoute", "error").inc()
        raise


async def reconcile_routes(
    ctx: Context, namespaces: Iterable[str], routes: RouteIndex, budgets: BudgetIndex
) -> None:
    """Reconcile every known route of ``namespaces`` ('*': all), e.g. after a budget
    change: each under its lock, read once."""
    for ref in refs_in(routes, namespaces):
        try:
            async with ctx.locks.hold(route_key(ref.namespace, ref.name)):
                route = await read_route(ctx, ref.namespace, ref.name)
                if route is not None:
                    await reconcile_route(ctx, route, budgets, current=True)
        except KubeError as error:  # that route's own handlers and timer retry
            log.warning("re-rendering %s/%s failed: %s", ref.namespace, ref.name, error)


async def cleanup_route(ctx: Context, namespace: str, name: str, uid: str | None) -> None:
    """Delete the route's ConfigMap (only if it is ours): no garbage collector assumed."""
    async with ctx.locks.hold(route_key(namespace, name)):
        cm_name = naming.configmap_name(name)
        existing = await ctx.kube.get(ConfigMap, cm_name, namespace=namespace)
        if existing is not None and owned_by(existing, name, uid):
            cm_uid = existing["metadata"].get("uid")
            await ctx.kube.delete(ConfigMap, cm_name, namespace=namespace, uid=cm_uid)
        ctx.metrics.forget_route(namespace, name)
