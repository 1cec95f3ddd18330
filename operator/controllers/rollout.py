"""The rollout controller: each interval, the ledger decides a route's next step.

One pass (:func:`drive_rollout`, from the route's rollout timer and after each
change) reads the route fresh under its lock and does at most one of:

- nothing, when the reconciler has not yet brought ``status.rollout`` in line
  with the spec (a new candidate, pause, abort): it re-renders first;
- finish a promotion under way (``Promoted`` while the spec still holds the
  rollout: the process stopped between the two writes of a promotion);
- promote now (``spec.rollout.promote``);
- analyse a step whose interval has passed: read both arms' statistics since the
  step began from the ledger, decide (:func:`aegis.operator.rollout.analysis.judge_step`,
  pure), write the new state, post the event, and re-render the ConfigMap.

Everything the controller knows is in ``status.rollout`` (step, weight, when the
step began, when it was last analysed), so a restarted operator carries on
where the last one stopped; writes are conditional on the ``resourceVersion``
read, so a concurrent edit makes the pass start over instead of overwriting it.

Promotion is two writes: first the state (``Promoted``, weight 100: sidecars keep
sending everything to the candidate), then the spec (the candidate's rules,
default, fallback and providerModels become the route's, ``spec.rollout`` is
removed). The reconciler keeps a ``Promoted`` state after the rollout is gone,
as the record of the promotion, until a new candidate starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from aegis.sidecar.ledger.db import LedgerUnavailableError
from aegis.sidecar.ledger.rollout_stats import ArmStats, arm_stats

from ..api.rollout import RolloutPlan
from ..api.status import RouteRolloutStatus
from ..kube import Body, Conflict, LLMRoute
from ..rollout.analysis import (
    RolloutVerdict,
    analysis_due,
    judge_step,
    ledger_unavailable,
    promote_now,
)
from ..rollout.state import recorded_state, rollout_state, transition_event
from . import events
from .context import Context
from .render import RenderError, parse_route_spec
from .route import BudgetIndex, reconcile_route

log = logging.getLogger("aegis.operator.rollout.state")

_ATTEMPTS = 3
_LEDGER_TIMEOUT = 15.0
_OUTCOMES = {"LedgerUnavailable": "ledger_unavailable"}


class _Conflict(Exception):
    """The route changed since it was read (409): read it again."""


async def read_arms(
    ctx: Context, namespace: str, route: str, since: datetime, until: datetime
) -> tuple[ArmStats, ArmStats]:
    """(stable, candidate) statistics of ``route`` in ``namespace`` for requests created
    in the window (the ledger's own per-arm query)."""
    if ctx.ledger is None:
        raise LedgerUnavailableError("the operator has no ledger DSN configured")
    async with asyncio.timeout(_LEDGER_TIMEOUT):
        stats = await arm_stats(ctx.ledger, route, since, until, namespace=namespace)
    return stats["stable"], stats["candidate"]


async def _analyse(
    ctx: Context,
    *,
    namespace: str,
    name: str,
    plan: RolloutPlan,
    state: RouteRolloutStatus,
    now: datetime,
) -> RolloutVerdict:
    try:
        stable, candidate = await read_arms(ctx, namespace, name, state.step_started_at, now)
    except (SQLAlchemyError, OSError, TimeoutError, LedgerUnavailableError) as error:
        ctx.metrics.ledger_up.set(0)
        log.warning("rollout analysis of %s/%s: cannot read the ledger: %s", namespace, name, error)
        return ledger_unavailable(state, now, str(error) or type(error).__name__)
    ctx.metrics.ledger_up.set(1)
    return judge_step(plan, state, stable, candidate, now)


async def write_state(ctx: Context, route: Body, state: RouteRolloutStatus) -> Body:
    """Write ``status.rollout`` if the route is unchanged since it was read; the
    updated route (for its new ``resourceVersion``)."""
    meta = route["metadata"]
    patch = {
        "metadata": {"resourceVersion": meta["resourceVersion"]},
        "status": {"rollout": state.model_dump(mode="json", by_alias=True)},
    }
    try:
        return await ctx.kube.merge_patch(
            LLMRoute, meta["name"], patch, namespace=meta["namespace"], status=True
        )
    except Conflict:
        raise _Conflict from None


def promotion_patch(spec: Mapping[str, Any]) -> Body:
    """The spec patch that makes the candidate the stable policy and ends the rollout.

    Built from the raw spec, so fields keep their written form (nothing defaulted
    is spelled out): the candidate's rules, default and fallback replace the
    route's, each provider named in ``providerModels`` serves those models, and
    ``rollout`` is removed."""
    candidate = spec["rollout"]["candidate"]
    patch: Body = {
        "rules": candidate.get("rules") or [],
        "default": candidate["default"],
        "fallback": candidate.get("fallback") or [],
        "rollout": None,
    }
    served = candidate.get("providerModels") or {}
    if served:
        patch["providers"] = [
            {**p, "models": served[p["name"]]} if p.get("name") in served else p
            for p in spec.get("providers") or []
        ]
    return patch


async def _promote_spec(ctx: Context, route: Body) -> None:
    meta = route["metadata"]
    body = {
        "metadata": {"resourceVersion": meta["resourceVersion"]},
        "spec": promotion_patch(route["spec"]),
    }
    try:
        await ctx.kube.merge_patch(LLMRoute, meta["name"], body, namespace=meta["namespace"])
    except Conflict:
        raise _Conflict from None
    log.info("promoted the rollout candidate of %s/%s", meta["namespace"], meta["name"])


async def _pass(ctx: Context, namespace: str, name: str) -> bool:
    """One decision for the route; True when the route must be re-rendered."""
    async with ctx.locks.hold(("LLMRoute", namespace, name)):
        route = await ctx.kube.get(LLMRoute, name, namespace=namespace)
        if route is None or route["metadata"].get("deletionTimestamp"):
            return False
        try:
            spec = parse_route_spec(route.get("spec"))
        except RenderError:
            return False  # the reconciler reports the invalid spec
        plan = spec.rollout
        if plan is None:
            return False
        now = ctx.now()
        current = recorded_state(route.get("status") or {})
        if current is None or rollout_state(plan, current, now) != current:
            return True  # the spec moved the rollout: the reconciler writes that first
        if current.phase == "Promoted":
            await _promote_spec(ctx, route)  # a promotion under way: finish it
            return True
        if plan.promote:
            decision: RolloutVerdict | None = promote_now(current, now)
        elif analysis_due(plan, current, now):
            decision = await _analyse(
                ctx, namespace=namespace, name=name, plan=plan, state=current, now=now
            )
        else:
            decision = None
        if decision is None or decision.state == current:
            return False
        updated = await write_state(ctx, route, decision.state)
        outcome = _OUTCOMES.get(decision.state.reason, decision.action)
        ctx.metrics.rollout_decisions.labels(name, namespace, outcome).inc()
        event = transition_event(current, decision.state)
        if event is not None:
            events.post(route, *event)
        if decision.action == "promote":
            await _promote_spec(ctx, updated)
        return decision.action != "wait"


async def drive_rollout(ctx: Context, namespace: str, name: str, budgets: BudgetIndex) -> None:
    """Advance, roll back or promote the route's rollout if it is due, and re-render."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            render = await _pass(ctx, namespace, name)
        except _Conflict:
            if attempt == _ATTEMPTS:
                raise Conflict(409, "Conflict", "the route kept changing; retrying") from None
            continue
        if render:
            await reconcile_route(ctx, namespace, name, budgets)
        return
