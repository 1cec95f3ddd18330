"""Property: the rollout decision agrees with an independent model of the documented rules.

Hypothesis draws a plan (steps ending at 100, an interval, analysis lines) and a run
of ticks (time passing, both arms' ledger figures). The code under test decides with
:func:`analysis_due` and :func:`judge_step`; the model below decides from the rules
as the CRD documents them, with exact fractions and its own clock and step. They must
agree on every tick, and across the whole run:

- the weight only grows, step by step through the plan, while progressing;
- any crossed line rolls back to 0 %, and nothing moves after a final phase;
- promotion happens only after the step at 100 % passed its analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.operator.api.rollout import RolloutPlan
from aegis.operator.api.status import RouteRolloutStatus
from aegis.operator.rollout.analysis import analysis_due, judge_step
from aegis.operator.rollout.state import fresh_state

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
DAY = 86_400
LATENCY_LINES = (50, 1000, 2000)


@dataclass(frozen=True)
class Arm:
    requests: int
    errors: int
    p95_latency_ms: int | None
    cost_usd: Decimal


@st.composite
def plans(draw: st.DrawFn) -> tuple[dict[str, Any], RolloutPlan]:
    inner = draw(st.lists(st.integers(1, 99), unique=True, max_size=4).map(sorted))
    analysis: dict[str, Any] = {
        "maxErrorRate": draw(st.sampled_from([0, 0.01, 0.05, 0.2, 1])),
        "maxP95LatencyMs": draw(st.sampled_from(LATENCY_LINES)),
        "minRequests": draw(st.integers(1, 50)),
    }
    if draw(st.booleans()):
        analysis["maxCostUSDPerDay"] = str(draw(st.integers(1, 500)))
    if draw(st.booleans()):
        analysis["maxCostPerRequestRatio"] = draw(st.sampled_from([0.5, 1, 1.5, 3]))
    raw = {
        "candidate": {"default": {"provider": "dashscope"}},
        "steps": [*inner, 100],
        "interval": f"{draw(st.integers(1, 120))}s",
        "analysis": analysis,
    }
    return raw, RolloutPlan.model_validate(raw)


@st.composite
def arms(draw: st.DrawFn) -> Arm:
    requests = draw(st.integers(0, 200))
    return Arm(
        requests,
        draw(st.integers(0, requests)),
        # On, just under and just over each line as often as anywhere else.
        draw(st.none() | st.sampled_from([x + d for x in LATENCY_LINES for d in (-1, 0, 1)])),
        Decimal(draw(st.integers(0, 5_000_000))) / 1_000_000,
    )


ticks = st.lists(
    st.tuples(st.floats(0, 300, allow_nan=False), arms(), arms()), min_size=1, max_size=25
)


@dataclass
class Model:
    """The documented rules, kept apart from the code: its own step, weight and clock."""

    raw: dict[str, Any]
    phase: str = "Progressing"
    step: int = 0
    started: datetime = T0
    analysed: datetime | None = None

    @property
    def steps(self) -> list[int]:
        steps: list[int] = self.raw["steps"]
        return steps

    @property
    def weight(self) -> int:
        return 0 if self.phase == "RolledBack" else self.steps[self.step]

    def due(self, now: datetime) -> bool:
        interval = int(self.raw["interval"].removesuffix("s"))
        last = max(self.started, self.analysed or self.started)
        return self.phase == "Progressing" and now >= last + timedelta(seconds=interval)

    def crossed(self, stable: Arm, candidate: Arm, window: int) -> bool:
        lines = self.raw["analysis"]
        c, s = candidate, stable
        if c.requests and Fraction(c.errors, c.requests) > Fraction(str(lines["maxErrorRate"])):
            return True
        if c.p95_latency_ms is not None and c.p95_latency_ms > lines["maxP95LatencyMs"]:
            return True
        per_day = Fraction(c.cost_usd) * DAY / max(window, 1)
        if "maxCostUSDPerDay" in lines and per_day > Fraction(lines["maxCostUSDPerDay"]):
            return True
        ratio = lines.get("maxCostPerRequestRatio")
        if ratio is not None and c.requests and s.requests:
            mine = Fraction(c.cost_usd) / c.requests
            theirs = Fraction(s.cost_usd) / s.requests
            return mine > theirs * Fraction(str(ratio))
        return False

    def judge(self, stable: Arm, candidate: Arm, now: datetime) -> str:
        now = now.replace(microsecond=0)
        window = int((now - self.started).total_seconds())
        self.analysed = now
        if candidate.requests < self.raw["analysis"]["minRequests"]:
            return "wait"
        if self.crossed(stable, candidate, window):
            self.phase = "RolledBack"
            return "rollback"
        if self.step == len(self.steps) - 1:
            self.phase = "Promoted"
            return "promote"
        self.step += 1
        self.started = now
        return "advance"


@settings(max_examples=1000, deadline=None)
@given(drawn=plans(), run=ticks)
def test_decisions_follow_the_documented_rules(
    drawn: tuple[dict[str, Any], RolloutPlan], run: list[tuple[float, Arm, Arm]]
) -> None:
    raw, plan = drawn
    state: RouteRolloutStatus = fresh_state(plan, T0)
    model = Model(raw)
    now, weights = T0, [state.weight]
    for elapsed, stable, candidate in run:
        now += timedelta(seconds=elapsed)
        due = analysis_due(plan, state, now)
        assert due == model.due(now), (state, model)
        if not due:
            continue
        verdict = judge_step(plan, state, stable, candidate, now)
        assert verdict.action == model.judge(stable, candidate, now), (state, stable, candidate)
        before, state = state, verdict.state
        assert (state.phase, state.step, state.weight) == (model.phase, model.step, model.weight)
        if state.weight != weights[-1]:
            weights.append(state.weight)
        if state.phase == "Progressing":  # monotone, one step at a time, never past 100
            assert state.weight >= before.weight and state.step - before.step in {0, 1}
        if state.phase == "Promoted":
            assert before.weight == 100 and before.step == len(plan.steps) - 1
    # The weights seen: the plan's steps in order, then 0 (rolled back) or nothing more.
    moving = [w for w in weights if w != 0]
    assert moving == plan.steps[: len(moving)]
    assert 0 not in weights or weights[-1] == 0
