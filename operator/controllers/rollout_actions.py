"""Manual rollout controls by annotation: ``aegis.io/rollout-action``.

``kubectl annotate llmroute chat-api aegis.io/rollout-action=pause`` is the
imperative face of the declarative fields of ``spec.rollout``: the operator
turns the action into those fields (and removes the annotation in the same
patch), so the spec stays the one place that says what the rollout should do,
``kubectl get -o yaml`` shows it, and the same code path handles both.

======== ==============================================================
pause    ``paused: true``: hold the current weight across intervals
resume   ``paused: false, abort: false``: carry on from the current step
abort    ``abort: true``: all traffic on stable now (weight 0)
promote  ``promote: true``: skip the remaining steps
restart  first step again, e.g. after a rollback (``status.rollout`` is
         reset first, then the controls are cleared)
======== ==============================================================

An unknown action, or one on a route without ``spec.rollout``, is removed with
a Warning event saying why (CEL cannot check annotations).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..api.events import Event
from ..api.naming import ROLLOUT_ACTION_ANNOTATION
from ..api.status import RouteRolloutStatus
from ..kube import Body, LLMRoute
from ..rollout.state import fresh_state, recorded_state, transition_event
from . import events
from .context import Context
from .render import RenderError, parse_route_spec
from .rollout import write_state
from .route import with_current_route

#: Action → the ``spec.rollout`` fields it sets.
ACTIONS: dict[str, dict[str, bool]] = {
    "pause": {"paused": True},
    "resume": {"paused": False, "abort": False},
    "abort": {"abort": True, "promote": False},
    "promote": {"promote": True, "abort": False},
    "restart": {"paused": False, "abort": False, "promote": False},
}


@dataclass(frozen=True, slots=True)
class ActionPlan:
    """One requested action: the state to reset first (``restart``), the
    ``spec.rollout`` fields to set with the annotation's removal, the events."""

    event: Event
    spec: Body | None = None
    restart: RouteRolloutStatus | None = None
    restart_event: Event | None = None


def requested_action(route: Body) -> str | None:
    """The annotation's value, if the route carries one."""
    annotations = route["metadata"].get("annotations") or {}
    value = annotations.get(ROLLOUT_ACTION_ANNOTATION)
    return None if value is None else str(value)


def _ignored(problem: str) -> ActionPlan:
    return ActionPlan(Event("Warning", "RolloutActionIgnored", problem))


def plan_action(route: Body, now: datetime) -> ActionPlan | None:
    """What the route's action annotation asks for (pure); ``None`` without one."""
    raw = requested_action(route)
    if raw is None:
        return None
    action = raw.strip().lower()
    if not (route.get("spec") or {}).get("rollout"):
        return _ignored(f"{ROLLOUT_ACTION_ANNOTATION}={raw}: the route has no spec.rollout")
    if action not in ACTIONS:
        return _ignored(
            f"{ROLLOUT_ACTION_ANNOTATION}={raw}: unknown action; use {', '.join(ACTIONS)}"
        )
    fields = ", ".join(f"{k}={str(v).lower()}" for k, v in ACTIONS[action].items())
    done = Event("Normal", "RolloutAction", f"{action}: spec.rollout {fields}")
    if action != "restart":
        return ActionPlan(done, spec={"rollout": ACTIONS[action]})
    try:
        plan = parse_route_spec(route.get("spec")).rollout
        if plan is None:  # checked above; a spec without rollout has nothing to restart
            raise RenderError("InvalidSpec", "spec.rollout is missing")
    except RenderError as error:
        return _ignored(f"cannot restart the rollout: {error.message}")
    message = f"restarted by annotation {ROLLOUT_ACTION_ANNOTATION} at {plan.steps[0]} %"
    state = fresh_state(plan, now, reason="Restarted", message=message)
    moved = transition_event(recorded_state(route.get("status") or {}), state)
    return ActionPlan(done, spec={"rollout": ACTIONS[action]}, restart=state, restart_event=moved)


async def _apply(ctx: Context, route: Body) -> Body:
    plan = plan_action(route, ctx.now())
    if plan is None:
        return route
    meta = route["metadata"]
    if plan.restart is not None:  # status.rollout first, then the controls are cleared
        route = await write_state(ctx, route, plan.restart)
        if plan.restart_event is not None:
            events.post(route, *plan.restart_event)
    patch: Body = {
        "metadata": {
            "resourceVersion": route["metadata"]["resourceVersion"],
            "annotations": {ROLLOUT_ACTION_ANNOTATION: None},
        }
    }
    if plan.spec is not None:
        patch["spec"] = plan.spec
    route = await ctx.kube.merge_patch(LLMRoute, meta["name"], patch, namespace=meta["namespace"])
    events.post(route, *plan.event)
    return route


async def apply_action(ctx: Context, route: Body) -> Body | None:
    """Apply and remove the route's rollout action annotation; the route as written
    (the same body without an annotation, ``None`` once the route is gone).

    The caller holds the route's lock; writes are conditional on the version read,
    so a concurrent edit makes it read the route again and start over rather than
    overwrite the edit."""

    async def once(found: Body, fresh: bool) -> Body:
        return await _apply(ctx, found)

    return await with_current_route(ctx, route, once)
