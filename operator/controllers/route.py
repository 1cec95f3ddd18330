"""Reconciling an ``LLMRoute``: its ConfigMap, its status, its events.

A reconcile is level-triggered: whatever woke it up (a change, a budget change,
the resync timer, a restart), it reads the route fresh from the API under the
route's lock, renders the config, checks the referenced Secrets (existence of
the Secret and key only), writes the ConfigMap only if its content differs and
the status only if it differs, and posts events only on transitions. Running it
twice in a row writes nothing the second time.

The rollout state (``status.rollout``) is kept in line with ``spec.rollout``
(:mod:`aegis.operator.rollout.state`) and rendered into the config; its transitions
are events too, posted once the status is written.

Failure modes keep the last good ConfigMap: an invalid spec or conflicting
budgets leave the sidecars on the previous config (``Ready=False`` says why); a
missing Secret still renders the config (it is valid; pods will not start until
the Secret exists, which the condition says).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ..api import naming
from ..api.specs import LLMRouteSpec
from ..api.status import RouteRolloutStatus
from ..kube import Body, ConfigMap, Conflict, KubeError, LLMRoute, Transient, Wanted, find, merge
from ..rollout.state import Event, recorded_state, rollout_state, transition_event
from . import events
from .context import Context
from .render import AppliedBudget, Rendered, RenderError, parse_route_spec, render_route

EventType = Literal["Normal", "Warning"]

log = logging.getLogger("aegis.operator.controllers.route")

BudgetIndex = Mapping[str, Iterable[AppliedBudget]]
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class RouteRef:
    """A route as the route index keeps it: enough to find the budgets' routes."""

    namespace: str
    name: str
    providers: tuple[str, ...]


RouteIndex = Mapping[str, Iterable[RouteRef]]


def budgets_for(index: BudgetIndex, namespace: str) -> list[AppliedBudget]:
    """Budgets whose scope may include routes of ``namespace``."""
    views = list(index.get(namespace, ()))
    if namespace != "*":
        views += list(index.get("*", ()))
    return views


def _owner_reference(route: Body) -> Body:
    meta = route["metadata"]
    return {
        "apiVersion": naming.API_VERSION,
        "kind": naming.ROUTE_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _owned_by(configmap: Body, route_name: str, route_uid: str | None) -> bool:
    meta = configmap.get("metadata") or {}
    if any(ref.get("uid") == route_uid for ref in meta.get("ownerReferences") or []):
        return True
    labels = meta.get("labels") or {}  # ours, left by an earlier route of this name
    return bool(
        labels.get(naming.MANAGED_BY_LABEL) == naming.MANAGED_BY
        and labels.get(naming.ROUTE_LABEL) == route_name
    )


def _desired_meta(route: Body, rendered: Rendered) -> Body:
    name = route["metadata"]["name"]
    return {
        "labels": {
            naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
            "app.kubernetes.io/part-of": "aegis",
            naming.ROUTE_LABEL: name,
        },
        "annotations": {naming.CONFIG_HASH_ANNOTATION: rendered.hash},
        "ownerReferences": [_owner_reference(route)],
    }


async def _apply_configmap(ctx: Context, route: Body, rendered: Rendered) -> str | Wanted:
    """Create or update the ConfigMap: 'created', 'updated', 'unchanged' or a refusal."""
    meta = route["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    cm_name = naming.configmap_name(name)
    desired = _desired_meta(route, rendered)
    existing = await ctx.kube.get(ConfigMap, cm_name, namespace=namespace)
    if existing is None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": naming.configmap_name(name), "namespace": namespace, **desired},
            "data": {naming.CONFIG_KEY: rendered.text},
        }
        await ctx.kube.create(ConfigMap, body)
        return "created"
    if not _owned_by(existing, name, meta.get("uid")):
        return Wanted(
            "Ready",
            "False",
            "ConfigMapConflict",
            f"ConfigMap {naming.configmap_name(name)} exists and is not managed by Aegis "
            f"(no ownerReference to this LLMRoute, no label {naming.MANAGED_BY_LABEL}="
            f"{naming.MANAGED_BY}); delete or rename it",
        )
    old_meta = existing.get("metadata") or {}
    data = existing.get("data") or {}
    labels = old_meta.get("labels") or {}
    annotations = old_meta.get("annotations") or {}
    owners = old_meta.get("ownerReferences") or []
    same = (
        data == {naming.CONFIG_KEY: rendered.text}
        and all(labels.get(k) == v for k, v in desired["labels"].items())
        and all(annotations.get(k) == v for k, v in desired["annotations"].items())
        and owners == desired["ownerReferences"]
    )
    if same:
        return "unchanged"
    patch = {
        "metadata": {"resourceVersion": old_meta.get("resourceVersion"), **desired},
        "data": {**dict.fromkeys(data), naming.CONFIG_KEY: rendered.text},
    }
    await ctx.kube.merge_patch(ConfigMap, cm_name, patch, namespace=namespace)
    return "updated"


async def _check_secrets(ctx: Context, namespace: str, rendered: Rendered) -> Wanted | None:
    """``Ready=False`` naming every missing Secret or key, or ``None`` when all exist."""
    problems: list[tuple[str, str]] = []
    secrets: dict[str, frozenset[str] | KubeError | None] = {}
    for use in rendered.secrets:
        if use.secret not in secrets:
            try:
                secrets[use.secret] = await ctx.kube.secret_keys(use.secret, namespace=namespace)
            except Transient:
                raise
            except KubeError as error:
                secrets[use.secret] = error
        found = secrets[use.secret]
        where = f"{use.field} (provider {use.provider})"
        if isinstance(found, KubeError):
            problems.append(
                ("SecretAccessDenied", f"cannot read Secret {use.secret!r} for {where}: {found}")
            )
        elif found is None:
            problems.append(
                (
                    "SecretNotFound",
                    f"Secret {use.secret!r} referenced by {where} does not exist in "
                    f"namespace {namespace}",
                )
            )
        elif use.key not in found:
            problems.append(
                ("KeyNotFound", f"Secret {use.secret!r} has no key {use.key!r} used by {where}")
            )
    if not problems:
        return None
    return Wanted("Ready", "False", problems[0][0], "; ".join(text for _, text in problems))


def _wanted_rollout(
    spec: LLMRouteSpec, previous: RouteRolloutStatus | None, now: datetime
) -> RouteRolloutStatus | None:
    """``status.rollout`` as the spec wants it. Without ``spec.rollout`` only a
    ``Promoted`` state stays (the record of the promotion that removed the rollout)."""
    if spec.rollout is not None:
        return rollout_state(spec.rollout, previous, now)
    if previous is not None and previous.phase == "Promoted":
        return previous
    return None


@dataclass
class _Outcome:
    conditions: list[Wanted]
    status: Body
    result: str
    #: The rollout state written with ``status`` and its transition (unset: unchanged).
    rollout: RouteRolloutStatus | None = None
    rollout_event: Event | None = None
    rollout_known: bool = False


async def _evaluate(ctx: Context, route: Body, budgets: BudgetIndex) -> _Outcome:
    meta, status = route["metadata"], route.get("status") or {}
    namespace, name = meta["namespace"], meta["name"]
    cm_name = naming.configmap_name(name)
    previous = recorded_state(status)
    try:
        spec = parse_route_spec(route.get("spec"))
        state = _wanted_rollout(spec, previous, ctx.now())
        rendered = render_route(namespace, name, spec, budgets_for(budgets, namespace), state)
    except RenderError as error:
        invalid = error.reason == "InvalidSpec"
        return _Outcome(
            [
                Wanted("Ready", "False", error.reason, error.message),
                Wanted("Invalid", "True", error.reason, error.message)
                if invalid
                else Wanted("Invalid", "False", "Valid", "the spec is valid"),
            ],
            {},
            "invalid",
        )
    fields: Body = {
        "providers": ",".join(p.name for p in rendered.config.providers),
        "budgets": ",".join(b.key for b in rendered.budgets) or None,
        # As the API returns it (no nulls), so that an unchanged state compares equal.
        "rollout": None
        if state is None
        else state.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    valid = Wanted("Invalid", "False", "Valid", "the spec is valid")
    moved = transition_event(previous, state)
    applied = await _apply_configmap(ctx, route, rendered)
    if isinstance(applied, Wanted):
        return _Outcome([applied, valid], fields, "invalid", state, moved, rollout_known=True)
    fields.update(configMap=cm_name, configHash=rendered.hash)
    # Announced as soon as it happened (a retry after a conflict would not see it again).
    if applied == "created":
        message = f"created ConfigMap {cm_name}, config hash {rendered.hash}"
        events.post(route, "Normal", "ConfigRendered", message)
    elif applied == "updated":
        message = f"updated ConfigMap {cm_name}: {status.get('configHash')} -> {rendered.hash}"
        events.post(route, "Normal", "ConfigUpdated", message)
    secret_problem = await _check_secrets(ctx, namespace, rendered)
    ready = secret_problem or Wanted(
        "Ready", "True", "Reconciled", f"ConfigMap {cm_name} holds config {rendered.hash}"
    )
    result = "unchanged" if applied == "unchanged" else "changed"
    return _Outcome([ready, valid], fields, result, state, moved, rollout_known=True)


def _transition_events(
    previous: Iterable[Mapping[str, Any]], wanted: Wanted
) -> list[tuple[EventType, str, str]]:
    old = find(previous, "Ready")
    if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (
        wanted.status,
        wanted.reason,
        wanted.message,
    ):
        return []
    if wanted.status == "True":
        if old is None or old.get("status") == "True":
            return []
        return [("Normal", "Ready", wanted.message)]
    return [("Warning", wanted.reason, wanted.message)]


async def _reconcile_once(ctx: Context, namespace: str, name: str, budgets: BudgetIndex) -> None:
    route = await ctx.kube.get(LLMRoute, name, namespace=namespace)
    if route is None or route["metadata"].get("deletionTimestamp"):
        return
    meta, status = route["metadata"], route.get("status") or {}
    outcome = await _evaluate(ctx, route, budgets)
    previous = status.get("conditions") or []
    conditions = merge(previous, outcome.conditions, int(meta.get("generation", 0)), ctx.now())
    wanted_status = {
        **outcome.status,
        "observedGeneration": int(meta.get("generation", 0)),
        "conditions": conditions,
    }
    if any(status.get(key) != value for key, value in wanted_status.items()):
        written = dict(wanted_status)
        if outcome.rollout is not None:  # nulls remove fields the state no longer has
            written["rollout"] = outcome.rollout.model_dump(mode="json", by_alias=True)
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": written}
        await ctx.kube.merge_patch(LLMRoute, name, patch, namespace=namespace, status=True)
    ready = outcome.conditions[0]
    ctx.metrics.set_route_ready(namespace, name, ready.status == "True")
    ctx.metrics.reconciles.labels("LLMRoute", outcome.result).inc()
    if outcome.rollout_known:
        ctx.metrics.set_rollout(namespace, name, outcome.rollout)
    if outcome.rollout_event is not None:  # after the write: a retry would post it again
        events.post(route, *outcome.rollout_event)
    for kind, reason, message in _transition_events(previous, ready):
        events.post(route, kind, reason, message)


async def reconcile_route(ctx: Context, namespace: str, name: str, budgets: BudgetIndex) -> None:
    """Bring the route's ConfigMap and status in line with its spec and budgets."""
    async with ctx.locks.hold(("LLMRoute", namespace, name)):
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                await _reconcile_once(ctx, namespace, name, budgets)
                return
            except Conflict:  # the route or ConfigMap changed since we read it: read again
                if attempt == _ATTEMPTS:
                    ctx.metrics.reconciles.labels("LLMRoute", "error").inc()
                    raise
            except KubeError:
                ctx.metrics.reconciles.labels("LLMRoute", "error").inc()
                raise


async def reconcile_routes(
    ctx: Context, namespaces: Iterable[str], routes: RouteIndex, budgets: BudgetIndex
) -> None:
    """Reconcile every known route of ``namespaces`` ('*': all), e.g. after a budget change."""
    wanted = set(namespaces)
    keys = list(routes) if "*" in wanted else [ns for ns in wanted if ns in routes]
    for key in keys:
        for ref in list(routes.get(key, ())):
            try:
                await reconcile_route(ctx, ref.namespace, ref.name, budgets)
            except KubeError as error:  # that route's own handlers and timer retry
                log.warning("re-rendering %s/%s failed: %s", ref.namespace, ref.name, error)


async def cleanup_route(ctx: Context, namespace: str, name: str, uid: str | None) -> None:
    """Delete the route's ConfigMap (only if it is ours): no garbage collector assumed."""
    async with ctx.locks.hold(("LLMRoute", namespace, name)):
        cm_name = naming.configmap_name(name)
        existing = await ctx.kube.get(ConfigMap, cm_name, namespace=namespace)
        if existing is not None and _owned_by(existing, name, uid):
            cm_uid = existing["metadata"].get("uid")
            await ctx.kube.delete(ConfigMap, cm_name, namespace=namespace, uid=cm_uid)
        ctx.metrics.forget_route(namespace, name)
