"""What one sync of an ``LLMBudget`` should write, decided without I/O.

:func:`prepare_budget` parses the budget and names the period to read;
:func:`plan_budget` turns the ledger's figures (or why they could not be read)
into a :class:`BudgetPlan`: the status patch, the gauges, the alert events.

Status amounts are strings with two decimals; the gauges carry the same figures.
Alerts: each threshold of ``alertThresholds`` crossed in a period produces one
Warning event. The thresholds already announced are kept in
``status.thresholdsCrossed`` together with ``status.period``, and the status is
written before the events are posted, so an operator restart never repeats an
announcement (at the price of losing one if the process dies in between).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from pydantic import ValidationError

from aegis.sidecar.contract import OnExceeded
from aegis.sidecar.contract.money import ZERO, cents
from aegis.sidecar.contract.periods import period_bounds, period_of, zone
from aegis.sidecar.contract.schema import BudgetSpec

from ..api.events import Event
from ..api.specs import LLMBudgetSpec
from ..kube.conditions import Wanted, conditional_patch, find, status_fields, timestamp
from ..metrics import BudgetFigures
from .indices import BudgetIndex, RouteIndex
from .render import ALL_NAMESPACES, AppliedBudget, describe_validation_error

Body = dict[str, Any]


def parse_budget(name: str, spec: Mapping[str, Any] | None) -> LLMBudgetSpec:
    return LLMBudgetSpec.model_validate({**(spec or {}), "name": name})


def applied_budget(
    namespace: str, name: str, spec: Mapping[str, Any] | None, platform_namespace: str | None
) -> AppliedBudget | None:
    """The budget as routes see it, or ``None`` for an invalid spec (it applies nowhere)."""
    try:
        parsed = parse_budget(name, spec)
    except ValidationError:
        return None
    scope = frozenset({namespace})
    if parsed.namespaces and namespace == platform_namespace:
        scope = frozenset(parsed.namespaces)
    return AppliedBudget(
        namespace=namespace,
        name=name,
        # Its key in the ledger: the sidecars of other namespaces it applies to
        # spend this namespace's budget, not one of their own.
        spec=parsed.budget().model_copy(update={"namespace": namespace}),
        routes=frozenset(parsed.routes),
        scope=scope,
    )


@dataclass(frozen=True, slots=True)
class PreparedBudget:
    """A parsed budget and the period its spend is read for, or why it is invalid."""

    spec: LLMBudgetSpec | None = None
    applied: AppliedBudget | None = None
    period: str = ""
    invalid: str | None = None


def current_period(spec: BudgetSpec, now: datetime) -> str:
    """The key of the budget's period that contains ``now`` (its kind, its zone)."""
    return period_of(now, zone(spec.timezone), spec.period)


@dataclass(frozen=True, slots=True)
class Spend:
    """The ledger's figures for the period: settled spend, and money held in leases."""

    spent: Decimal
    reserved: Decimal
    unknown: Decimal = Decimal(0)  # part of reserved: calls of unknown outcome


@dataclass(frozen=True, slots=True)
class LedgerProblem:
    """Why the ledger could not be read (the ``Ready`` reason and message)."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    #: The status merge patch (conditional on the budget's version), ``None``: unchanged.
    status: Body | None
    #: Posted after the status write, and only if it succeeded.
    events: tuple[Event, ...]
    #: The gauges (set before the write): provider and figures.
    gauges: tuple[str, BudgetFigures] | None = None


def prepare_budget(budget: Body, platform_namespace: str | None, now: datetime) -> PreparedBudget:
    meta = budget["metadata"]
    try:
        spec = parse_budget(meta["name"], budget.get("spec"))
    except ValidationError as error:
        return PreparedBudget(invalid=describe_validation_error(error))
    applied = applied_budget(
        meta["namespace"], meta["name"], budget.get("spec"), platform_namespace
    )
    assert applied is not None  # the spec parsed above
    return PreparedBudget(spec, applied, current_period(spec, now))


def _figures(limit: Decimal, spend: Spend, at: float) -> BudgetFigures:
    spent, reserved = spend.spent, spend.reserved
    ratio = spent / limit if limit > 0 else Decimal(1)
    return BudgetFigures(
        limit=limit,
        spent=spent,
        reserved=reserved,
        remaining=max(limit - spent - reserved, ZERO),
        utilisation=ratio,
        exceeded=spent >= limit,
        synced_at=at,
    )


def _percent(figures: BudgetFigures) -> Decimal:
    return (figures.utilisation * 100).quantize(Decimal("0.1"), ROUND_DOWN)


def routes_enforcing(applied: AppliedBudget, routes: RouteIndex) -> str | None:
    keys = list(routes) if ALL_NAMESPACES in applied.scope else sorted(applied.scope)
    found = sorted(
        f"{ref.namespace}/{ref.name}"
        for key in keys
        for ref in routes.get(key, ())
        if applied.applies_to(ref.namespace, ref.name, ref.providers)
    )
    return ",".join(found) or None


def _scope_problem(
    namespace: str, spec: LLMBudgetSpec, platform_namespace: str | None
) -> Wanted | None:
    if not spec.namespaces or namespace == platform_namespace:
        return None
    return Wanted(
        "Ready",
        "False",
        "ScopeNotAllowed",
        f"spec.namespaces is honoured only for LLMBudgets in the platform namespace "
        f"({platform_namespace or 'none configured'}); this budget applies "
        f"to routes in {namespace} only",
    )


_ACTIONS = {
    OnExceeded.FALLBACK_LOCAL: "requests fall back to local providers",
    OnExceeded.REJECT: "requests are refused (budget_exceeded)",
    OnExceeded.NOTIFY: "requests go ahead (onExceeded: Notify) and are counted",
}


def _alert_conditions(
    spec: BudgetSpec, figures: BudgetFigures, pct: Decimal, crossed: list[int]
) -> list[Wanted]:
    spent = f"spent {cents(figures.spent)} of {cents(figures.limit)} USD ({pct}%)"
    below_100 = [t for t in crossed if t < 100]
    warning = (
        Wanted("Warning", "True", "ThresholdCrossed", f"{spent}: crossed {below_100[-1]}%")
        if below_100
        else Wanted("Warning", "False", "BelowThresholds", spent)
    )
    action = _ACTIONS[spec.on_exceeded]
    exceeded = (
        Wanted("Exceeded", "True", "LimitReached", f"{spent}: {action}")
        if figures.exceeded
        else Wanted("Exceeded", "False", "WithinLimit", spent)
    )
    return [warning, exceeded]


def _plan(
    budget: Body,
    wanted: list[Wanted],
    fields: Body,
    alerts: list[Event],
    now: datetime,
    *,
    heartbeat: float,
    synced: bool = False,
) -> BudgetPlan:
    """The status patch for ``fields`` and ``wanted``; ``lastSync`` is rewritten with
    any change, and at least every ``heartbeat`` seconds after a ledger read."""
    status = budget.get("status") or {}
    new, changed = status_fields(budget, fields, wanted, now)
    if synced:
        last = status.get("lastSync")
        age = None if last is None else (now - datetime.fromisoformat(last)).total_seconds()
        if changed or age is None or age >= heartbeat:
            new["lastSync"] = timestamp(now)
            changed = True
    events = list(alerts)
    ready = wanted[0]
    if ready.status == "False" and changed:
        old = find(status.get("conditions") or [], "Ready")
        if old is None or old.get("reason") != ready.reason:
            events.append(Event("Warning", ready.reason, ready.message))
    return BudgetPlan(conditional_patch(budget, new) if changed else None, tuple(events))


def plan_invalid(budget: Body, message: str, *, heartbeat: float, now: datetime) -> BudgetPlan:
    """The status of a budget whose spec the operator cannot use (it applies nowhere)."""
    invalid = Wanted("Ready", "False", "InvalidSpec", message)
    return _plan(budget, [invalid], {}, [], now, heartbeat=heartbeat)


def plan_budget(
    budget: Body,
    prepared: PreparedBudget,
    ledger: Spend | LedgerProblem | None,
    routes: RouteIndex,
    budgets: BudgetIndex,
    *,
    platform_namespace: str | None,
    heartbeat: float,
    now: datetime,
) -> BudgetPlan:
    """Everything one sync writes, from the budget, the indices and the ledger's figures."""
    namespace = budget["metadata"]["namespace"]
    spec, applied = prepared.spec, prepared.applied
    if spec is None or applied is None:
        return plan_invalid(budget, prepared.invalid or "", heartbeat=heartbeat, now=now)
    assert ledger is not None  # read for every valid budget
    fields: Body = {"routes": routes_enforcing(applied, routes)}
    problem = _scope_problem(namespace, spec, platform_namespace)
    return plan_spend(
        budget, spec, prepared.period, ledger, fields, heartbeat=heartbeat, now=now,
        problem=problem,
    )  # fmt: skip


def ledger_provider(spec: BudgetSpec) -> str:
    """The provider a budget's ledger rows and gauges are labelled with: the one it
    names, else ``any`` (several providers, or every paid one)."""
    names = spec.provider_names
    return names[0] if len(names) == 1 else "any"


def plan_spend(
    budget: Body,
    spec: BudgetSpec,
    period: str,
    ledger: Spend | LedgerProblem,
    fields: Body,
    *,
    heartbeat: float,
    now: datetime,
    problem: Wanted | None = None,
) -> BudgetPlan:
    """The status, alerts and gauges of a valid budget of either kind for ``period``:
    ``fields`` (what the kind adds) plus the figures; ``problem`` overrides Ready."""
    status = budget.get("status") or {}
    if isinstance(ledger, LedgerProblem):
        ready = problem or Wanted("Ready", "False", ledger.reason, ledger.message)
        return _plan(budget, [ready], fields, [], now, heartbeat=heartbeat)
    figures = _figures(spec.limit_usd, ledger, now.timestamp())
    pct = _percent(figures)
    same_period = status.get("period") == period
    announced = list(status.get("thresholdsCrossed") or []) if same_period else []
    crossed = sorted(t for t in set(spec.alert_thresholds) if pct >= t)
    if figures.exceeded and spec.on_exceeded is OnExceeded.NOTIFY and 100 not in crossed:
        crossed.append(100)  # Notify lets calls through: say so once, whatever the thresholds
    alerts = []
    for threshold in (t for t in crossed if t not in announced):
        reason = "BudgetExceeded" if threshold >= 100 else "BudgetThresholdCrossed"
        figure = f"{cents(ledger.spent)} of {cents(spec.limit_usd)} USD ({pct}%)"
        message = f"spend in {period} is {figure}: crossed the {threshold}% alert threshold"
        if threshold >= 100:
            message += f"; {_ACTIONS[spec.on_exceeded]}"
        alerts.append(Event("Warning", reason, message))
    start, end = period_bounds(period, zone(spec.timezone))
    fields = {
        **fields,
        "period": period,
        "periodStart": timestamp(start),
        "periodEnd": timestamp(end),
        "limitUSD": cents(figures.limit),
        "spentUSD": cents(figures.spent),
        "reservedUSD": cents(figures.reserved),
        "unknownOutcomeUSD": cents(ledger.unknown),
        "remainingUSD": cents(figures.remaining),
        "utilisation": f"{pct}%",
        "thresholdsCrossed": sorted(set(announced) | set(crossed)),
    }
    ready = problem or Wanted("Ready", "True", "Synced", f"read the ledger for {period}")
    wanted = [ready, *_alert_conditions(spec, figures, pct, crossed)]
    plan = _plan(budget, wanted, fields, alerts, now, heartbeat=heartbeat, synced=True)
    return BudgetPlan(plan.status, plan.events, (ledger_provider(spec), figures))
