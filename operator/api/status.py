"""Status types of ``LLMRoute``, ``LLMBudget`` and ``ClusterLLMBudget`` (the status
schemas are generated from them, and the reconcilers write what they describe).

Kubernetes conventions: ``conditions`` is a list-map keyed by ``type`` with the
standard fields; money is a decimal string with two places (exact, where a JSON
number would be a float in most clients); times are RFC 3339 in UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from aegis.sidecar.contract.schema import Model

USD_TEXT = r"^[0-9]+\.[0-9]{2}$"
USD_MICRO_TEXT = r"^[0-9]+\.[0-9]{6}$"
PERIOD_KEY = r"^[0-9]{4}-([0-9]{2}|W[0-9]{2}|[0-9]{2}-[0-9]{2})$"

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """The state of one aspect of the object (Kubernetes condition conventions)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Condition type in CamelCase, e.g. Ready.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable CamelCase cause of the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Details for humans.")
    last_transition_time: datetime = Field(
        description="When the status last changed (not when it was last checked)."
    )
    observed_generation: int = Field(
        default=0, ge=0, description="The metadata.generation the condition was computed for."
    )


def _conditions_list_map(schema: dict[str, Any]) -> None:
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]


RolloutPhase = Literal["Progressing", "Paused", "Aborted", "RolledBack", "Promoted"]


class ArmStatistics(Model):
    """One arm's figures in the last analysis (from the ledger, since the step began).
    Rates and money are strings: exact and readable (JSON numbers would be floats)."""

    requests: int = Field(default=0, ge=0, description="Requests since the step began.")
    errors: int = Field(default=0, ge=0, description="Failed requests since the step began.")
    error_rate: str | None = Field(
        default=None,
        max_length=16,
        pattern=r"^[0-9]+\.[0-9]+%$",
        description="errors / requests as a percentage, e.g. 4.2%.",
    )
    p95_latency_ms: int | None = Field(
        default=None, alias="p95LatencyMs", ge=0, description="p95 latency of successes, ms."
    )
    cost_usd: str | None = Field(
        default=None,
        alias="costUSD",
        max_length=32,
        pattern=USD_MICRO_TEXT,
        description="Settled spend in USD.",
    )
    cost_per_request_usd: str | None = Field(
        default=None,
        alias="costPerRequestUSD",
        max_length=32,
        pattern=USD_MICRO_TEXT,
        description="Spend per request in USD.",
    )
    cost_usd_per_day: str | None = Field(
        default=None,
        alias="costUSDPerDay",
        max_length=32,
        pattern=USD_TEXT,
        description="Spend extrapolated to 24 h at the current weight, USD.",
    )


class RouteRolloutStatus(Model):
    """Where the rollout stands (owned by the rollout controller; the operator renders
    ``weight`` into the sidecar config)."""

    phase: RolloutPhase = Field(description="Progressing, Paused, Aborted, RolledBack or Promoted.")
    step: int = Field(ge=0, le=19, description="Index of the current entry of spec.rollout.steps.")
    weight: int = Field(ge=0, le=100, description="Percent of traffic sent to the candidate.")
    candidate_hash: str = Field(
        max_length=64, description="Hash of the candidate policy this state belongs to."
    )
    step_started_at: datetime = Field(description="When the current step began.")
    last_transition_time: datetime = Field(description="When phase or weight last changed.")
    last_analysis_time: datetime | None = Field(
        default=None, description="When the ledger was last analysed for this step."
    )
    reason: str = Field(
        default="",
        max_length=64,
        description="CamelCase cause of the phase: Started, Advanced, Waiting, Paused, "
        "Resumed, Aborted, Restarted, ErrorRate, Latency, Cost, Promoted, PromotedManually, "
        "LedgerUnavailable.",
    )
    message: str = Field(default="", max_length=1024, description="Details for humans.")
    stable: ArmStatistics | None = Field(default=None, description="Stable arm, last analysis.")
    candidate: ArmStatistics | None = Field(
        default=None, description="Candidate arm, last analysis."
    )


class LLMRouteStatus(Model):
    """What the operator made of the route."""

    model_config = ConfigDict(json_schema_extra=_conditions_list_map)

    observed_generation: int = Field(
        default=0, ge=0, description="The metadata.generation last reconciled."
    )
    config_map: str | None = Field(
        default=None, max_length=253, description="ConfigMap holding the rendered config."
    )
    config_hash: str | None = Field(
        default=None,
        max_length=64,
        description="Hash of the rendered config (also annotation aegis.io/config-hash).",
    )
    providers: str | None = Field(
        default=None, max_length=2048, description="Provider names, comma-separated."
    )
    budgets: str | None = Field(
        default=None, max_length=4096, description="LLMBudgets rendered into the config."
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="Ready and Invalid."
    )
    rollout: RouteRolloutStatus | None = None


class LLMBudgetStatus(Model):
    """Spend of the current period, read from the ledger. Amounts are decimal strings
    with two places (exact, unlike JSON numbers); the ledger itself keeps micro-dollars."""

    model_config = ConfigDict(json_schema_extra=_conditions_list_map)

    observed_generation: int = Field(default=0, ge=0, description="Last reconciled generation.")
    period: str | None = Field(
        default=None,
        max_length=10,
        pattern=PERIOD_KEY,
        description="The current period: 2026-12-05 (Daily), 2026-W49 (Weekly, ISO week) "
        "or 2026-12 (Monthly).",
    )
    period_start: datetime | None = Field(
        default=None, description="Start of the current period (midnight in spec.timezone)."
    )
    period_end: datetime | None = Field(
        default=None,
        description="End of the current period, when the budget resets (the next period "
        "starts with nothing spent).",
    )
    limit_usd: str | None = Field(
        default=None, alias="limitUSD", pattern=USD_TEXT, max_length=24, description="Limit."
    )
    spent_usd: str | None = Field(
        default=None,
        alias="spentUSD",
        pattern=USD_TEXT,
        max_length=24,
        description="Settled spend charged to this budget in the current period.",
    )
    reserved_usd: str | None = Field(
        default=None,
        alias="reservedUSD",
        pattern=USD_TEXT,
        max_length=24,
        description="Money held by sidecars for calls in flight (budget leases).",
    )
    unknown_outcome_usd: str | None = Field(
        default=None,
        alias="unknownOutcomeUSD",
        pattern=USD_TEXT,
        max_length=24,
        description="Part of reserved kept charged for calls whose outcome the ledger "
        "never learnt (a sidecar that died with calls in flight: the provider may have "
        "billed them); never returned this period.",
    )
    remaining_usd: str | None = Field(
        default=None,
        alias="remainingUSD",
        pattern=USD_TEXT,
        max_length=24,
        description="Limit minus spent and reserved, never below zero.",
    )
    utilisation: str | None = Field(
        default=None,
        max_length=16,
        pattern=r"^[0-9]+\.[0-9]%$",
        description="Spent as a percentage of the limit, e.g. 80.0%.",
    )
    thresholds_crossed: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=list,
        max_length=10,
        description="Alert thresholds already announced this period (one event each).",
    )
    routes: str | None = Field(
        default=None, max_length=4096, description="Routes enforcing this budget (ns/name)."
    )
    last_sync: datetime | None = Field(default=None, description="Last read of the ledger.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="Ready, Warning and Exceeded."
    )


class ClusterLLMBudgetStatus(LLMBudgetStatus):
    """Spend of the current period across every selected namespace, read from the
    ledger, and the namespaces that may spend it now."""

    model_config = ConfigDict(json_schema_extra=_conditions_list_map)

    namespaces: str | None = Field(
        default=None,
        max_length=8192,
        description="Namespaces the namespaceSelector matches (comma-separated): their "
        "sidecars reserve in this budget.",
    )
    namespace_count: int = Field(
        default=0, ge=0, description="How many namespaces the namespaceSelector matches."
    )
