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

from typing import Any

from ..api.naming import ROLLOUT_ACTION_ANNOTATION
from ..kube import Body, LLMRoute
from ..rollout.state import fresh_state, recorded_state, transition_event
from . import events
from .context import Context
from .render import RenderError, parse_route_spec
from .rollout import write_state

#: Action → the ``spec.rollout`` fields it sets.
ACTIONS: dict[str, dict[str, bool]] = {
    "pause": {"paused": True},
    "resume": {"paused": False, "abort": False},
    "abort": {"abort": True, "promote": False},
    "promote": {"promote": True, "abort": False},
    "restart": {"paused": False, "abort": False, "promote": False},
}


def requested_action(route: Body) -> str | None:
    """The annotation's value, if the route carries one."""
    annotations = route["metadata"].get("annotations") or {}
    value = annotations.get(ROLLOUT_ACTION_ANNOTATION)
    return None if value is None else str(value)


async def _restart(ctx: Context, route: Body) -> Body:
    """Reset ``status.rollout`` to the first step; the route with its new version."""
    plan = parse_route_spec(route.get("spec")).rollout
    if plan is None:  # the caller checked; a spec without rollout has nothing to restart
        raise RenderError("InvalidSpec", "spec.rollout is missing")
    previous = recorded_state(route.get("status") or {})
    message = f"restarted by annotation {ROLLOUT_ACTION_ANNOTATION} at {plan.steps[0]} %"
    state = fresh_state(plan, ctx.now(), reason="Restarted", message=message)
    updated = await write_state(ctx, route, state)
    event = transition_event(previous, state)
    if event is not None:
        events.post(route, *event)
    return updated


async def apply_action(ctx: Context, namespace: str, name: str) -> bool:
    """Apply and remove the route's rollout action annotation; True if there was one.

    Runs under the route's lock; writes are conditional on the version read, so a
    concurrent edit fails this attempt (kopf retries the handler) rather than
    being overwritten."""
    async with ctx.locks.hold(("LLMRoute", namespace, name)):
        route = await ctx.kube.get(LLMRoute, name, namespace=namespace)
        if route is None or route["metadata"].get("deletionTimestamp"):
            return False
        raw = requested_action(route)
        if raw is None:
            return False
        action = raw.strip().lower()
        spec_patch: dict[str, Any] | None = None
        problem = None
        if not (route.get("spec") or {}).get("rollout"):
            problem = f"{ROLLOUT_ACTION_ANNOTATION}={raw}: the route has no spec.rollout"
        elif action not in ACTIONS:
            problem = f"{ROLLOUT_ACTION_ANNOTATION}={raw}: unknown action; use {', '.join(ACTIONS)}"
        else:
            spec_patch = {"rollout": ACTIONS[action]}
            if action == "restart":
                try:
                    route = await _restart(ctx, route)
                except RenderError as error:
                    problem = f"cannot restart the rollout: {error.message}"
                    spec_patch = None
        patch: Body = {
            "metadata": {
                "resourceVersion": route["metadata"]["resourceVersion"],
                "annotations": {ROLLOUT_ACTION_ANNOTATION: None},
            }
        }
        if spec_patch is not None:
            patch["spec"] = spec_patch
        await ctx.kube.merge_patch(LLMRoute, name, patch, namespace=namespace)
        if problem is not None:
            events.post(route, "Warning", "RolloutActionIgnored", problem)
        else:
            fields = ", ".join(f"{k}={str(v).lower()}" for k, v in ACTIONS[action].items())
            events.post(route, "Normal", "RolloutAction", f"{action}: spec.rollout {fields}")
        return True
