"""The rollout state a route's config is rendered with (``status.rollout``), kept
consistent with the spec, and the event that announces each change of it.

Two writers share ``status.rollout`` and never disagree because each owns
different transitions:

- the reconciler (:func:`rollout_state`, on every reconcile) follows the spec: a
  new candidate starts at the first step, ``abort`` holds the weight at 0,
  ``paused`` holds it where it is, clearing either resumes the step with a fresh
  interval, and edited ``steps`` re-read the current step's weight;
- the rollout controller (:mod:`aegis.operator.controllers.rollout`) follows the
  ledger: it advances, rolls back and promotes (:mod:`aegis.operator.rollout.analysis`),
  writes the new state and re-renders through
  :func:`aegis.operator.controllers.route.reconcile_route`, so the sidecars see its weight.

``RolledBack`` and ``Promoted`` are final for their candidate: nothing in the spec
but a new candidate (or the annotation action ``restart``) moves them. A
``Promoted`` state whose rollout is still in the spec is a promotion under way
(the controller writes the state first, then moves the candidate into the spec),
so it must hold even against ``abort``: the controller finishes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from aegis.sidecar.contract.schema import Policy

from ..api.events import Event, EventType
from ..api.rollout import RolloutPlan
from ..api.status import RouteRolloutStatus

#: Phases no control of the spec leaves (only a new candidate or ``restart`` does).
FINAL_PHASES = ("RolledBack", "Promoted")
#: Reasons of the rollout state that report a failed analysis rather than a transition.
_ANNOUNCED_REASONS: dict[str, tuple[EventType, str]] = {
    "LedgerUnavailable": ("Warning", "RolloutAnalysisFailed")
}
_EVENTS: dict[str, tuple[EventType, str]] = {
    "Started": ("Normal", "RolloutStarted"),
    "Advanced": ("Normal", "RolloutAdvanced"),
    "Paused": ("Normal", "RolloutPaused"),
    "Resumed": ("Normal", "RolloutResumed"),
    "Restarted": ("Normal", "RolloutRestarted"),
    "Aborted": ("Normal", "RolloutAborted"),
    "StepsChanged": ("Normal", "RolloutStepsChanged"),
    "Promoted": ("Normal", "RolloutPromoted"),
    "PromotedManually": ("Normal", "RolloutPromoted"),
    "ErrorRate": ("Warning", "RolloutRolledBack"),
    "Latency": ("Warning", "RolloutRolledBack"),
    "Cost": ("Warning", "RolloutRolledBack"),
}


def candidate_hash(candidate: Policy) -> str:
    """A stable hash of the candidate policy: the stickiness salt and the rollout's
    identity (a different candidate starts over, with a different set of users)."""
    canonical = json.dumps(
        candidate.model_dump(mode="json", by_alias=True, exclude_none=True),
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def recorded_state(status: Mapping[str, Any]) -> RouteRolloutStatus | None:
    """``status.rollout`` as read from the API, or ``None`` (none, or unreadable after a
    hand edit: the rollout then starts over rather than guessing)."""
    raw = status.get("rollout")
    if not raw:
        return None
    try:
        return RouteRolloutStatus.model_validate(raw)
    except ValidationError:
        return None


def fresh_state(
    plan: RolloutPlan, now: datetime, reason: str = "Started", message: str | None = None
) -> RouteRolloutStatus:
    """The first step of ``plan``'s candidate."""
    digest = candidate_hash(plan.candidate)
    now = now.replace(microsecond=0)
    return RouteRolloutStatus(
        phase="Progressing",
        step=0,
        weight=plan.steps[0],
        candidate_hash=digest,
        step_started_at=now,
        last_transition_time=now,
        reason=reason,
        message=message or f"candidate {digest} started at {plan.steps[0]} %",
    )


def _holding(plan: RolloutPlan, current: RouteRolloutStatus) -> RouteRolloutStatus:
    """The state of a rollout that already runs, as the spec's controls want it
    (times not yet updated)."""
    step = min(current.step, len(plan.steps) - 1)
    weight = plan.steps[step]
    if current.phase in FINAL_PHASES:
        return current
    if plan.abort:
        message = "spec.rollout.abort is set: all traffic on stable"
        return current.model_copy(
            update={"phase": "Aborted", "reason": "Aborted", "message": message, "weight": 0}
        )
    if plan.paused:
        message = f"held at {weight} % by spec.rollout.paused"
        return current.model_copy(
            update={
                "phase": "Paused",
                "reason": "Paused",
                "message": message,
                "weight": weight,
                "step": step,
            }
        )
    if current.phase in ("Paused", "Aborted"):
        message = f"resumed at step {step} ({weight} %) with a fresh interval"
        return current.model_copy(
            update={
                "phase": "Progressing",
                "reason": "Resumed",
                "message": message,
                "weight": weight,
                "step": step,
            }
        )
    if (step, weight) != (current.step, current.weight):
        message = f"spec.rollout.steps changed: step {step} is now {weight} %"
        return current.model_copy(
            update={"reason": "StepsChanged", "message": message, "weight": weight, "step": step}
        )
    return current


def rollout_state(
    plan: RolloutPlan, current: RouteRolloutStatus | None, now: datetime
) -> RouteRolloutStatus:
    """The state to render and record, given the plan and the recorded state."""
    if current is None or current.candidate_hash != candidate_hash(plan.candidate):
        current = fresh_state(plan, now)
        if not (plan.abort or plan.paused):
            return current
    wanted = _holding(plan, current)
    if (wanted.phase, wanted.weight, wanted.step) == (current.phase, current.weight, current.step):
        return wanted
    now = now.replace(microsecond=0)
    times: dict[str, object] = {"last_transition_time": now}
    if wanted.reason == "Resumed":  # a held step gets a whole interval of new traffic
        times.update(step_started_at=now, last_analysis_time=None)
    return wanted.model_copy(update=times)


def transition_event(
    previous: RouteRolloutStatus | None, new: RouteRolloutStatus | None
) -> Event | None:
    """The event announcing ``previous`` → ``new``, or ``None`` when nothing moved.

    Only a change of phase, step, weight or candidate is a transition; a new
    analysis of the same step (``Waiting`` with fresh figures) is not, so a
    rollout that waits for traffic posts nothing until it moves."""
    if new is None:
        if previous is None or previous.phase == "Promoted":
            return None
        return Event("Normal", "RolloutRemoved", "spec.rollout was removed: all traffic on stable")
    if previous is None or previous.candidate_hash != new.candidate_hash:
        return Event("Normal", "RolloutStarted", new.message)
    moved = (previous.phase, previous.step, previous.weight) != (new.phase, new.step, new.weight)
    if not moved:
        announced = _ANNOUNCED_REASONS.get(new.reason)
        if announced is None or previous.reason == new.reason:
            return None
        return Event(announced[0], announced[1], new.message)
    kind, reason = _EVENTS.get(new.reason, ("Normal", f"Rollout{new.phase}"))
    message = new.message
    if reason == "RolloutRolledBack":
        message = f"{new.reason}: {new.message}"
    return Event(kind, reason, message)
