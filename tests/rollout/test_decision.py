"""The rollout decision as a pure function: figures + plan + state + now → next state.

No network, no clock: every branch of :mod:`aegis.operator.rollout.analysis`, the
state the reconciler keeps (:mod:`aegis.operator.rollout.state`) and the promotion patch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from aegis.operator.api.rollout import RolloutPlan
from aegis.operator.api.status import RouteRolloutStatus
from aegis.operator.controllers.render import parse_route_spec
from aegis.operator.controllers.rollout import promotion_patch
from aegis.operator.rollout.analysis import (
    analysis_due,
    breaches,
    duration_seconds,
    judge_step,
    ledger_unavailable,
    promote_now,
)
from aegis.operator.rollout.state import fresh_state, rollout_state, transition_event
from aegis.sidecar.ledger.rollout_stats import ArmStats

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "crds" / "examples" / "rollout.yaml"


def plan(**changes: Any) -> RolloutPlan:
    raw: dict[str, Any] = {
        "candidate": {"default": {"provider": "dashscope"}},
        "steps": [10, 30, 50, 75, 100],
        "interval": "10s",
        "analysis": {"maxErrorRate": 0.05, "maxP95LatencyMs": 1000, "minRequests": 20},
    }
    analysis = changes.pop("analysis", {})
    raw.update(changes)
    raw["analysis"] = {**raw["analysis"], **analysis}
    return RolloutPlan.model_validate(raw)


def arm(
    name: str, requests: int, errors: int = 0, p95: int | None = 100, cost: str = "0"
) -> ArmStats:
    return ArmStats(name, requests, errors, p95, Decimal(cost))


def healthy() -> tuple[ArmStats, ArmStats]:
    return arm("stable", 200, 2, 120, "0.020000"), arm("candidate", 25, 0, 150, "0.002500")


def started(p: RolloutPlan) -> RouteRolloutStatus:
    return fresh_state(p, T0)


# -- when an analysis is due -------------------------------------------------------------


def test_durations() -> None:
    assert duration_seconds("90s") == 90
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("250ms") == 0.25
    assert duration_seconds("1.5s") == 1.5
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds("2d")


def test_analysis_is_due_one_interval_after_the_step_or_the_last_analysis() -> None:
    p = plan()
    state = started(p)
    assert not analysis_due(p, state, T0 + timedelta(seconds=9))
    assert analysis_due(p, state, T0 + timedelta(seconds=10))
    waited = judge_step(p, state, arm("stable", 5), arm("candidate", 3), T0 + timedelta(seconds=10))
    assert not analysis_due(p, waited.state, T0 + timedelta(seconds=19))
    assert analysis_due(p, waited.state, T0 + timedelta(seconds=20))
    for phase in ("Paused", "Aborted", "RolledBack", "Promoted"):
        held = state.model_copy(update={"phase": phase})
        assert not analysis_due(p, held, T0 + timedelta(days=1)), phase


# -- decisions ---------------------------------------------------------------------------


def test_a_healthy_candidate_advances_step_by_step_and_is_promoted() -> None:
    p = plan()
    state, now, weights = started(p), T0, [10]
    for _ in range(5):
        now += timedelta(seconds=10)
        decision = judge_step(p, state, *healthy(), now)
        state = decision.state
        weights.append(state.weight)
    assert weights == [10, 30, 50, 75, 100, 100]
    assert (decision.action, state.phase, state.reason) == ("promote", "Promoted", "Promoted")
    assert "the candidate is the stable policy now" in state.message
    assert state.last_transition_time == now


def test_advance_starts_a_new_step_and_records_both_arms() -> None:
    p = plan()
    now = T0 + timedelta(seconds=10)
    decision = judge_step(p, started(p), *healthy(), now)
    state = decision.state
    assert decision.action == "advance"
    assert (state.phase, state.step, state.weight) == ("Progressing", 1, 30)
    assert state.reason == "Advanced"
    assert state.step_started_at == state.last_analysis_time == state.last_transition_time == now
    assert state.candidate is not None and state.stable is not None
    assert state.candidate.requests == 25 and state.candidate.error_rate == "0.0%"
    assert state.candidate.cost_usd == "0.002500"
    assert state.candidate.cost_per_request_usd == "0.000100"
    assert state.candidate.cost_usd_per_day == "21.60"  # $0.0025 in 10 s
    assert state.stable.error_rate == "1.0%" and state.stable.p95_latency_ms == 120
    assert "step 0 (10 %) passed" in state.message and "now step 1 at 30 %" in state.message


def test_too_few_candidate_requests_waits_another_interval() -> None:
    p = plan()
    state = started(p)
    now = T0 + timedelta(seconds=10)
    # Failing, but on 10 requests: no verdict either way.
    decision = judge_step(p, state, arm("stable", 90), arm("candidate", 10, errors=5), now)
    assert decision.action == "wait"
    waited = decision.state
    assert (waited.phase, waited.step, waited.weight, waited.reason) == (
        "Progressing", 0, 10, "Waiting",
    )  # fmt: skip
    assert waited.last_transition_time == state.last_transition_time
    assert waited.step_started_at == T0 and waited.last_analysis_time == now
    assert "waits for 20 candidate requests before its analysis, has 10" in waited.message
    assert transition_event(state, waited) is None  # waiting is not a transition


@pytest.mark.parametrize(
    ("candidate", "analysis", "reason", "text"),
    [
        (arm("candidate", 100, errors=10), {}, "ErrorRate",
         "candidate error rate 10.0% (10 of 100 requests) is over maxErrorRate 5.0%"),
        (arm("candidate", 100, p95=1500), {}, "Latency",
         "candidate p95 latency 1500 ms is over maxP95LatencyMs 1000 ms (stable 120 ms)"),
        (arm("candidate", 100, cost="0.5"), {"maxCostUSDPerDay": 100}, "Cost",
         "candidate spend $0.5 in 10 s extrapolates to $4320.00 per day, over "
         "maxCostUSDPerDay $100"),
        (arm("candidate", 100, cost="0.2"), {"maxCostPerRequestRatio": 1.5}, "Cost",
         "candidate cost per request $0.002000 is 20.00x stable's $0.000100, over "
         "maxCostPerRequestRatio 1.5"),
    ],
)  # fmt: skip
def test_any_breach_rolls_back_naming_the_metric_and_values(
    candidate: ArmStats, analysis: dict[str, Any], reason: str, text: str
) -> None:
    p = plan(analysis=analysis)
    state = started(p).model_copy(update={"step": 2, "weight": 50})
    stable = arm("stable", 100, 1, 120, "0.01")
    now = T0 + timedelta(seconds=10)
    decision = judge_step(p, state, stable, candidate, now)
    rolled = decision.state
    assert decision.action == "rollback"
    assert (rolled.phase, rolled.weight, rolled.step, rolled.reason) == (
        "RolledBack", 0, 2, reason,
    )  # fmt: skip
    assert text in rolled.message and rolled.message.startswith("rolled back from step 2 (50 %)")
    assert rolled.last_transition_time == now
    event = transition_event(state, rolled)
    assert event is not None and event[:2] == ("Warning", "RolloutRolledBack")
    assert event[2].startswith(f"{reason}: rolled back")


def test_every_crossed_line_is_listed_and_the_first_names_the_reason() -> None:
    p = plan(analysis={"maxCostUSDPerDay": 1})
    bad = arm("candidate", 100, errors=20, p95=5000, cost="1")
    found = breaches(p.analysis, arm("stable", 100), bad, 10.0)
    assert [b.metric for b in found] == ["ErrorRate", "Latency", "Cost"]
    decision = judge_step(p, started(p), arm("stable", 100), bad, T0 + timedelta(seconds=10))
    assert decision.state.reason == "ErrorRate" and decision.state.message.count(";") == 2


def test_lines_are_inclusive_and_missing_figures_do_not_breach() -> None:
    p = plan(analysis={"maxCostPerRequestRatio": 2})
    at_the_line = arm("candidate", 100, errors=5, p95=1000, cost="0.02")
    assert breaches(p.analysis, arm("stable", 100, cost="0.01"), at_the_line, 10.0) == []
    no_successes = arm("candidate", 100, errors=0, p95=None)
    assert breaches(p.analysis, arm("stable", 0, p95=None), no_successes, 10.0) == []
    # without stable traffic (the step at 100 %) the ratio cannot be evaluated
    dear = arm("candidate", 100, cost="5")
    assert breaches(p.analysis, arm("stable", 0, p95=None), dear, 10.0) == []
    # a free stable arm makes any candidate cost an infinite ratio
    free = breaches(p.analysis, arm("stable", 100), arm("candidate", 100, cost="0.01"), 10.0)
    assert [b.metric for b in free] == ["Cost"] and "∞" in free[0].message


def test_promote_now_from_any_phase_and_ledger_outage_holds() -> None:
    p = plan()
    state = started(p).model_copy(update={"phase": "Paused", "step": 1, "weight": 30})
    now = T0 + timedelta(minutes=1)
    decision = promote_now(state, now)
    assert decision.action == "promote"
    assert (decision.state.phase, decision.state.weight, decision.state.reason) == (
        "Promoted", 100, "PromotedManually",
    )  # fmt: skip
    held = ledger_unavailable(started(p), now, "connection refused").state
    assert (held.phase, held.weight, held.reason) == ("Progressing", 10, "LedgerUnavailable")
    assert held.last_analysis_time == now and "connection refused" in held.message
    event = transition_event(started(p), held)
    assert event is not None and event[:2] == ("Warning", "RolloutAnalysisFailed")


# -- the state the reconciler keeps --------------------------------------------------------


def test_rolled_back_and_promoted_hold_against_the_controls() -> None:
    p = plan()
    later = T0 + timedelta(hours=1)
    rolled = started(p).model_copy(update={"phase": "RolledBack", "weight": 0, "reason": "Cost"})
    for controls in ({"abort": True}, {"paused": True}, {}):
        assert rollout_state(plan(**controls), rolled, later) == rolled
    promoted = started(p).model_copy(update={"phase": "Promoted", "weight": 100})
    assert rollout_state(plan(abort=True), promoted, later) == promoted
    new_candidate = plan(candidate={"default": {"provider": "openai"}})
    restarted = rollout_state(new_candidate, rolled, later)
    assert (restarted.phase, restarted.weight, restarted.reason) == ("Progressing", 10, "Started")


def test_resume_gives_the_step_a_fresh_interval() -> None:
    p = plan()
    state = started(p).model_copy(update={"step": 1, "weight": 30, "last_analysis_time": T0})
    paused = rollout_state(plan(paused=True), state, T0 + timedelta(seconds=5))
    assert (paused.phase, paused.weight, paused.step_started_at) == ("Paused", 30, T0)
    resumed_at = T0 + timedelta(minutes=5)
    resumed = rollout_state(p, paused, resumed_at)
    assert (resumed.phase, resumed.weight, resumed.reason) == ("Progressing", 30, "Resumed")
    assert resumed.step_started_at == resumed_at and resumed.last_analysis_time is None
    assert not analysis_due(p, resumed, resumed_at + timedelta(seconds=9))
    events = [transition_event(state, paused), transition_event(paused, resumed)]
    assert [e[1] for e in events if e] == ["RolloutPaused", "RolloutResumed"]


def test_transition_events() -> None:
    p = plan()
    first = started(p)
    assert transition_event(None, None) is None
    assert transition_event(None, first) == ("Normal", "RolloutStarted", first.message)
    assert transition_event(first, first) is None
    aborted = rollout_state(plan(abort=True), first, T0)
    assert transition_event(first, aborted) == (
        "Normal", "RolloutAborted", "spec.rollout.abort is set: all traffic on stable",
    )  # fmt: skip
    removed = transition_event(first, None)
    assert removed is not None and removed[1] == "RolloutRemoved"
    promoted = first.model_copy(update={"phase": "Promoted", "weight": 100})
    assert transition_event(promoted, None) is None  # the promotion removed it


# -- promotion -------------------------------------------------------------------------------


def test_promotion_patch_moves_the_candidate_into_the_spec() -> None:
    spec: dict[str, Any] = {
        "providers": [
            {"name": "local", "type": "ollama", "models": {"default": "gemma3:4b"}},
            {"name": "dashscope", "type": "dashscope", "models": {"default": "qwen-plus"},
             "apiKeySecretRef": {"name": "dashscope", "key": "apiKey"}},
        ],
        "rules": [{"name": "old", "to": {"provider": "local"}}],
        "default": {"provider": "local"},
        "fallback": ["local"],
        "rollout": {
            "candidate": {
                "default": {"provider": "dashscope"},
                "providerModels": {"dashscope": {"default": "qwen-max"}},
            },
            "steps": [50, 100],
        },
    }  # fmt: skip
    patch = promotion_patch(spec)
    assert patch["rules"] == [] and patch["fallback"] == []
    assert patch["default"] == {"provider": "dashscope"} and patch["rollout"] is None
    assert patch["providers"][0] == spec["providers"][0]
    assert patch["providers"][1]["models"] == {"default": "qwen-max"}
    assert patch["providers"][1]["apiKeySecretRef"] == {"name": "dashscope", "key": "apiKey"}
    del spec["rollout"]["candidate"]["providerModels"]
    assert "providers" not in promotion_patch(spec)


# -- the example -----------------------------------------------------------------------------


def test_the_example_is_the_origins_plan() -> None:
    spec = parse_route_spec(yaml.safe_load(EXAMPLE.read_text())["spec"])
    p = spec.rollout
    assert p is not None
    assert p.steps == [10, 30, 50, 75, 100]
    assert duration_seconds(p.interval) <= 120  # a demo, not three days
    state, stable = started(p), arm("stable", 1000, 5, 400, "0")
    now = T0 + timedelta(seconds=duration_seconds(p.interval))
    # a day at $10.01: over the line (the demo's window is its interval)
    window = duration_seconds(p.interval)
    dear = (Decimal("10.01") * Decimal(window) / 86400).quantize(Decimal("0.000001"))
    cases = {
        "ErrorRate": arm("candidate", 100, errors=6),
        "Latency": arm("candidate", 100, p95=1001),
        "Cost": arm("candidate", 100, cost=str(dear)),
    }
    for reason, candidate in cases.items():
        assert judge_step(p, state, stable, candidate, now).state.reason == reason
    fine = arm("candidate", 100, errors=5, p95=1000, cost="0")
    assert judge_step(p, state, stable, fine, now).state.weight == 30
