"""The rollout decision: ledger figures + plan + state + now → the next state. Pure.

No I/O, no clock: the controller (:mod:`aegis.operator.controllers.rollout`) reads
the ledger and the route and passes them in, so every branch is unit-tested
without a network, and a restarted operator that reads the same status and
ledger decides the same thing.

The rules, in order:

- a step is analysed when its interval has passed since it began (or since its
  last analysis); the window is always the whole step, from ``stepStartedAt``;
- with fewer than ``minRequests`` candidate requests the step waits another
  interval (figures recorded, reason ``Waiting``): a verdict on a handful of
  requests is noise, in either direction;
- any line crossed rolls back to 0 % (phase ``RolledBack``), the reason naming
  the first metric (``ErrorRate``, ``Latency``, ``Cost``) and the message every
  crossed line with its values;
- otherwise the next step, and after the last step (100 %) ``Promoted``.

Money stays ``Decimal``; rates are compared as the exact fractions they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal, Protocol

from aegis.sidecar.contract.money import cents, micros

from ..api.rollout import RolloutAnalysis, RolloutPlan
from ..api.status import ArmStatistics, RouteRolloutStatus

Metric = Literal["ErrorRate", "Latency", "Cost"]
Action = Literal["wait", "advance", "rollback", "promote"]

DAY = Decimal(86_400)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MESSAGE_LIMIT = 1024


class ArmStats(Protocol):
    """One arm's ledger figures over the window (the ledger's per-arm query returns
    them; read structurally, so this pure module needs no database code)."""

    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def p95_latency_ms(self) -> int | None: ...
    @property
    def cost_usd(self) -> Decimal: ...


@dataclass(frozen=True, slots=True)
class Breach:
    """One line the candidate crossed."""

    metric: Metric
    message: str


@dataclass(frozen=True, slots=True)
class RolloutVerdict:
    """What the controller does next: write ``state`` (and promote on ``promote``)."""

    action: Action
    state: RouteRolloutStatus


def duration_seconds(text: str) -> float:
    """A Go duration as the CRD accepts it (``90s``, ``1h30m``, ``250ms``) in seconds."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _second(now: datetime) -> datetime:
    return now.replace(microsecond=0)


def analysis_due(plan: RolloutPlan, state: RouteRolloutStatus, now: datetime) -> bool:
    """True when a progressing step has run a whole interval since it began or since
    its last analysis."""
    if state.phase != "Progressing":
        return False
    last = state.step_started_at
    if state.last_analysis_time is not None and state.last_analysis_time > last:
        last = state.last_analysis_time
    return now >= last + timedelta(seconds=duration_seconds(plan.interval))


def _percent(part: int, whole: int) -> str:
    return f"{(Decimal(part) * 100 / whole if whole else Decimal(0)):.1f}%"


def _per_request(stats: ArmStats) -> Decimal | None:
    return stats.cost_usd / stats.requests if stats.requests else None


def _per_day(stats: ArmStats, window: float) -> Decimal:
    return stats.cost_usd * DAY / Decimal(str(max(window, 1.0)))


def figures(stats: ArmStats, window: float) -> ArmStatistics:
    """One arm's figures for the status, from its ledger statistics over ``window`` s."""
    per_request = _per_request(stats)
    return ArmStatistics.model_validate(
        {
            "requests": stats.requests,
            "errors": stats.errors,
            "errorRate": _percent(stats.errors, stats.requests) if stats.requests else None,
            "p95LatencyMs": stats.p95_latency_ms,
            "costUSD": micros(stats.cost_usd),
            "costPerRequestUSD": None if per_request is None else micros(per_request),
            "costUSDPerDay": cents(_per_day(stats, window)),
        }
    )


def breaches(
    analysis: RolloutAnalysis, stable: ArmStats, candidate: ArmStats, window: float
) -> list[Breach]:
    """Every line of ``analysis`` the candidate crossed, in the order ErrorRate,
    Latency, Cost (per day, then per request against stable)."""
    found: list[Breach] = []
    c, s = candidate, stable
    limit = Decimal(str(analysis.max_error_rate))
    if c.requests and Decimal(c.errors) > limit * c.requests:
        found.append(
            Breach(
                "ErrorRate",
                f"candidate error rate {_percent(c.errors, c.requests)} ({c.errors} of "
                f"{c.requests} requests) is over maxErrorRate {limit * 100:.1f}% "
                f"(stable {_percent(s.errors, s.requests)} of {s.requests})",
            )
        )
    if c.p95_latency_ms is not None and c.p95_latency_ms > analysis.max_p95_latency_ms:
        stable_p95 = "n/a" if s.p95_latency_ms is None else f"{s.p95_latency_ms} ms"
        found.append(
            Breach(
                "Latency",
                f"candidate p95 latency {c.p95_latency_ms} ms is over maxP95LatencyMs "
                f"{analysis.max_p95_latency_ms} ms (stable {stable_p95})",
            )
        )
    per_day = _per_day(c, window)
    if analysis.max_cost_usd_per_day is not None and per_day > analysis.max_cost_usd_per_day:
        found.append(
            Breach(
                "Cost",
                f"candidate spend ${c.cost_usd} in {window:.0f} s extrapolates to "
                f"${cents(per_day)} per day, over maxCostUSDPerDay "
                f"${analysis.max_cost_usd_per_day}",
            )
        )
    ratio = analysis.max_cost_per_request_ratio
    mine, theirs = _per_request(c), _per_request(s)
    if ratio is not None and mine is not None and theirs is not None:
        line = theirs * Decimal(str(ratio))
        if mine > line:
            times = "∞" if not theirs else f"{mine / theirs:.2f}x"
            found.append(
                Breach(
                    "Cost",
                    f"candidate cost per request ${micros(mine)} is {times} stable's "
                    f"${micros(theirs)}, over maxCostPerRequestRatio {ratio:g}",
                )
            )
    return found


def _summary(stable: ArmStats, candidate: ArmStats, window: float) -> str:
    p95 = "n/a" if candidate.p95_latency_ms is None else f"{candidate.p95_latency_ms} ms"
    return (
        f"candidate {candidate.requests} requests, error rate "
        f"{_percent(candidate.errors, candidate.requests)}, p95 {p95}, "
        f"${cents(_per_day(candidate, window))} per day; "
        f"stable {stable.requests} requests, error rate "
        f"{_percent(stable.errors, stable.requests)}"
    )


def judge_step(
    plan: RolloutPlan,
    state: RouteRolloutStatus,
    stable: ArmStats,
    candidate: ArmStats,
    now: datetime,
) -> RolloutVerdict:
    """The next state of a progressing step whose analysis is due (see the module doc)."""
    now = _second(now)
    window = max((now - state.step_started_at).total_seconds(), 1.0)
    analysed = {
        "last_analysis_time": now,
        "stable": figures(stable, window),
        "candidate": figures(candidate, window),
    }
    where = f"step {state.step} ({state.weight} %)"
    needed = plan.analysis.min_requests
    if candidate.requests < needed:
        message = (
            f"{where} waits for {needed} candidate requests before its analysis, "
            f"has {candidate.requests}"
        )
        update = {**analysed, "reason": "Waiting", "message": message}
        return RolloutVerdict("wait", state.model_copy(update=update))
    crossed = breaches(plan.analysis, stable, candidate, window)
    if crossed:
        message = "; ".join(b.message for b in crossed)
        update = {
            **analysed,
            "phase": "RolledBack",
            "weight": 0,
            "reason": crossed[0].metric,
            "message": f"rolled back from {where}: {message}"[:_MESSAGE_LIMIT],
            "last_transition_time": now,
        }
        return RolloutVerdict("rollback", state.model_copy(update=update))
    summary = _summary(stable, candidate, window)
    last = len(plan.steps) - 1
    if state.step >= last:
        update = {
            **analysed,
            "phase": "Promoted",
            "weight": 100,
            "reason": "Promoted",
            "message": f"{where} passed ({summary}): the candidate is the stable policy now"[
                :_MESSAGE_LIMIT
            ],
            "last_transition_time": now,
        }
        return RolloutVerdict("promote", state.model_copy(update=update))
    step = state.step + 1
    update = {
        **analysed,
        "step": step,
        "weight": plan.steps[step],
        "reason": "Advanced",
        "message": f"{where} passed ({summary}); now step {step} at {plan.steps[step]} %"[
            :_MESSAGE_LIMIT
        ],
        "step_started_at": now,
        "last_transition_time": now,
    }
    return RolloutVerdict("advance", state.model_copy(update=update))


def promote_now(state: RouteRolloutStatus, now: datetime) -> RolloutVerdict:
    """``spec.rollout.promote``: skip the remaining steps (from any phase but Promoted)."""
    now = _second(now)
    message = (
        f"promoted by spec.rollout.promote at step {state.step} ({state.weight} %, "
        f"{state.phase}): the candidate is the stable policy now"
    )
    update = {
        "phase": "Promoted",
        "weight": 100,
        "reason": "PromotedManually",
        "message": message,
        "last_transition_time": now,
    }
    return RolloutVerdict("promote", state.model_copy(update=update))


def ledger_unavailable(state: RouteRolloutStatus, now: datetime, error: str) -> RolloutVerdict:
    """The ledger could not be read: hold the weight (no verdict without figures) and
    try again next interval."""
    message = f"cannot read the ledger, holding {state.weight} %: {error}"[:_MESSAGE_LIMIT]
    update = {
        "last_analysis_time": _second(now),
        "reason": "LedgerUnavailable",
        "message": message,
    }
    return RolloutVerdict("wait", state.model_copy(update=update))
