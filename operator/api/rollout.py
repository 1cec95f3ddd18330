"""The rollout plan of an ``LLMRoute`` (``spec.rollout``): candidate, steps, interval,
stickiness, analysis lines and manual controls.

Only the candidate, the stickiness and the current weight reach the sidecar config;
steps, interval, analysis and controls are read by the operator (the reconciler
and the rollout controller). Cross-field rules that need the route's providers
live on :class:`aegis.operator.api.specs.LLMRouteSpec`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from aegis.sidecar.contract.schema import CandidatePolicy, Model, Money, Stickiness

from .extras import DURATION, cel, extra, unique


class RolloutAnalysis(Model):
    """Lines the candidate must stay within at every step; crossing any one rolls it back
    to 0 % (analysed from the ledger per arm since the step began).

    A step is analysed once its interval has passed and the candidate has served
    ``minRequests`` requests in it (until then the step simply lasts longer): a
    verdict on a handful of requests would be noise. Sidecar refusals (budget,
    privacy) are not the candidate's errors and are not counted."""

    max_error_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Highest share of failed candidate requests (0.05 = 5 %); more rolls "
        "back with reason ErrorRate.",
    )
    max_p95_latency_ms: int = Field(
        default=1000,
        alias="maxP95LatencyMs",
        ge=1,
        le=600_000,
        description="Highest p95 latency of successful candidate requests, in ms; more "
        "rolls back with reason Latency.",
    )
    max_cost_usd_per_day: Money | None = Field(
        default=None,
        alias="maxCostUSDPerDay",
        le=1_000_000,
        description="Highest candidate spend in USD per day at the current weight "
        "(the step's spend extrapolated to 24 h); more rolls back with reason Cost.",
    )
    max_cost_per_request_ratio: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Highest candidate cost per request relative to stable's in the same "
        "step (1.5 = 50 % more expensive); more rolls back with reason Cost. Not "
        "evaluated while stable has no requests (at 100 %).",
    )
    min_requests: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Candidate requests a step needs before it is analysed.",
    )


class RolloutPlan(Model):
    """A candidate policy that receives a growing share of the traffic.

    The operator renders the current weight into the sidecar config; each interval
    the rollout controller analyses both arms from the ledger and advances to the
    next step, rolls back to 0 % or, after the step at 100 %, promotes the candidate
    to the stable policy (the candidate's rules, default, fallback and
    providerModels replace the route's, and spec.rollout is removed). A new
    candidate starts again at the first step.

    Manual controls are the fields paused, abort and promote, or the annotation
    ``aegis.io/rollout-action`` with pause, resume, abort, promote or restart
    (the operator turns it into those fields and removes it; restart sends a
    rolled-back candidate to the first step again)."""

    model_config = ConfigDict(
        json_schema_extra=extra(
            cel(
                "!has(self.steps) || self.steps[size(self.steps) - 1] == 100",
                "steps must end at 100",
                ".steps",
            ),
            cel(
                "!has(self.steps) || (self.steps.isSorted() && "
                "self.steps.all(s, self.steps.exists_one(t, t == s)))",
                "steps must be strictly ascending",
                ".steps",
            ),
            cel(
                f"!has(self.interval) || !self.interval.matches(r'{DURATION}') || "
                "(duration(self.interval) >= duration('1s') && "
                "duration(self.interval) <= duration('2160h'))",
                "interval must be between 1s and 2160h",
                ".interval",
            ),
            cel(
                "!(has(self.abort) && self.abort && has(self.promote) && self.promote)",
                "abort and promote cannot both be set",
                ".promote",
            ),
            cel(
                unique("candidate.fallback"),
                "fallback entries must be unique",
                ".candidate.fallback",
            ),
        )
    )

    candidate: CandidatePolicy = Field(
        description="The policy under test: rules, default and fallback, referring to the "
        "route's providers (a target's model may differ from the stable policy's), and "
        "providerModels, other models of those providers for candidate requests."
    )
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 30, 50, 75, 100],
        min_length=1,
        max_length=20,
        description="Candidate weights in percent, strictly ascending, ending at 100.",
    )
    interval: str = Field(
        default="24h",
        max_length=32,
        pattern=DURATION,
        description="Time at each step before it is analysed (Go duration: 90s, 30m, 24h).",
    )
    stickiness: Stickiness = Field(
        default_factory=Stickiness,
        description="Keeps each user on one arm within a step (and on the candidate as its "
        "weight grows): the request header carrying the user key, X-Aegis-User unless "
        "set. Requests without it are assigned at random.",
    )
    analysis: RolloutAnalysis = Field(default_factory=RolloutAnalysis)
    paused: bool = Field(
        default=False, description="Hold the current weight; false resumes the rollout."
    )
    abort: bool = Field(
        default=False,
        description="Send all traffic to the stable policy now (weight 0, phase Aborted).",
    )
    promote: bool = Field(
        default=False,
        description="Skip the remaining steps and promote the candidate to stable now.",
    )
