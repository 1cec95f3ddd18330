"""The rollout controller: each interval, the ledger decides a route's next step.

One pass (:func:`drive_rollout`, from the route's rollout timer and after each
change) starts from the route kopf handed over and does at most one of
(:func:`pending`, pure):

- nothing but re-render, when the reconciler has not yet brought
  ``status.rollout`` in line with the spec (a new candidate, pause, abort);
- finish a promotion under way (``Promoted`` while the spec still holds the
  rollout: the process stopped between the two writes of a promotion);
- promote now (``spec.rollout.promote``);
- analyse a step whose interval has passed: read both arms' statistics since the
  step began from the ledger, judge them
  (:func:`aegis.operator.rollout.analysis.judge_step`, pure), then write the new
  state, post the event and re-render the ConfigMap.

Everything the controller knows is in ``status.rollout`` (step, weight, when the
step began, when it was last analysed), so a restarted operator carries on
where the last one stopped; writes are conditional on the ``resourceVersion``
read, so a concurrent edit makes the pass start over (from a fresh read)
instead of overwriting it.

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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.exc import SQLAlchemyError

from aegis.sidecar.ledger.db import LedgerUnavailableError
from aegis.sidecar.ledger.rollout_stats import ArmStats, arm_stats

from ..api.rollout import RolloutPlan
from ..api.status import RouteRolloutStatus
from ..kube import Body, LLMRoute
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
from .indices import BudgetIndex
from .render import RenderError, parse_route_spec
from .route import reconcile_route, with_current_route

log = logging.getLogger(__name__)

_LEDGER_TIMEOUT = 15.0
_OUTCOMES = {"LedgerUnavailable": "ledger_unavailable"}

Move = Literal["idle", "render", "finish-promotion", "promote", "analyse"]


@dataclass(frozen=True, slots=True)
class Pending:
    """What the route's rollout needs now, from the route alone."""

    move: Move
    plan: RolloutPlan | None = None
    state: RouteRolloutStatus | None = None


def pending(route: Body, now: datetime) -> Pending:
    """The move of this pass (pure): see the module doc, in that order."""
    try:
        plan = parse_route_spec(route.get("spec")).rollout
    except RenderError:
        return Pending("idle")  # the reconciler reports the invalid spec
    if plan is None:
        return Pending("idle")
    current = recorded_state(route.get("status") or {})
    if current is None or rollout_state(plan, current, now) != current:
        return Pending("render")  # the spec moved the rollout: the reconciler writes that
    if current.phase == "Promoted":
        return Pending("finish-promotion", plan, current)
    if plan.promote:
        return Pending("promote", plan, current)
    if analysis_due(plan, current, now):
        return Pending("analyse", plan, current)
    return Pending("idle", plan, current)


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
    ctx: Context, route: Body, plan: RolloutPlan, state: RouteRolloutStatus, now: datetime
) -> RolloutVerdict:
    """Read the step's figures from the ledger, then judge them (pure)."""
    namespace, name = route["metadata"]["namespace"], route["metadata"]["name"]
    try:
        stable, candidate = await read_arms(ctx, namespace, name, state.step_started_at, now)
    except (SQLAlchemyError, OSError, TimeoutError, LedgerUnavailableError) as error:
        ctx.metrics.ledger_up.set(0)
        log.warning("rollout analysis of %s/%s: cannot read the ledger: %s", namespace, name, error)
        return ledger_unavailable(state, now, str(error) or type(error).__name__)
    ctx.metrics.ledger_up.set(1)
    return judge_step(plan, state, stable, candidate, now)


async def write_state(ctx: Context, route: Body, state: RouteRolloutStatus) -> Body:
    """Write ``status.rollout`` if the route is unchanged since it was read
    (:class:`~aegis.operator.kube.Conflict` otherwise); the route as written."""
    meta = route["metadata"]
    patch = {
        "metadata": {"resourceVersion": meta["resourceVersion"]},
        "status": {"rollout": state.model_dump(mode="json", by_alias=True)},
    }
    return await ctx.kube.merge_patch(
        LLMRoute, meta["name"], patch, namespace=meta["namespace"], status=True
    )


async def _promote_spec(ctx: Context, route: Body) -> Body:
    meta = route["metadata"]
    body = {
        "metadata": {"resourceVersion": meta["resourceVersion"]},
        "spec": promotion_patch(route["spec"]),
    }
    promoted = await ctx.kube.merge_patch(LLMRoute, meta["name"], body, namespace=meta["namespace"])
    log.info("promoted the rollout candidate of %s/%s", meta["namespace"], meta["name"])
    return promoted


async def _apply_verdict(
    ctx: Context, route: Body, current: RouteRolloutStatus, verdict: RolloutVerdict
) -> Body:
    """Write the new state, count and announce it, and promote on ``promote``."""
    meta = route["metadata"]
    route = await write_state(ctx, route, verdict.state)
    outcome = _OUTCOMES.get(verdict.state.reason, verdict.action)
    ctx.metrics.rollout_decisions.labels(meta["name"], meta["namespace"], outcome).inc()
    event = transition_event(current, verdict.state)
    if event is not None:
        events.post(route, *event)
    if verdict.action == "promote":
        route = await _promote_spec(ctx, route)
    return route


async def _pass(ctx: Context, route: Body) -> tuple[Body, bool]:
    """One pass; the route as written and whether it must be re-rendered."""
    now = ctx.now()
    step = pending(route, now)
    if step.move in ("idle", "render"):
        return route, step.move == "render"
    if step.move == "finish-promotion":  # a promotion under way: finish it
        return await _promote_spec(ctx, route), True
    assert step.plan is not None and step.state is not None
    if step.move == "promote":
        verdict = promote_now(step.state, now)
    else:
        verdict = await _analyse(ctx, route, step.plan, step.state, now)
    if verdict.state == step.state:
        return route, False
    return await _apply_verdict(ctx, route, step.state, verdict), verdict.action != "wait"


async def drive_rollout(
    ctx: Context, route: Body, budgets: BudgetIndex, *, current: bool = False
) -> None:
    """Advance, roll back or promote the route's rollout if it is due, and re-render.
    ``current`` as for :func:`~.route.reconcile_route`. The caller holds the route's lock."""

    async def once(found: Body, fresh: bool) -> tuple[Body, bool, bool]:
        written, render = await _pass(ctx, found)
        return written, render, current or fresh or written is not found

    done = await with_current_route(ctx, route, once)
    if done is not None and done[1]:
        written, _, known = done
        await reconcile_route(ctx, written, budgets, current=known)
