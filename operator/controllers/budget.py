"""``LLMBudget``: its scope (for routes) and its status from the ledger.

Spend is read with :func:`aegis.sidecar.ledger.report.budget_usage`, the same
query ``aegis ledger report`` uses: the provider's settled spend in the budget's
current calendar month (in the budget's time zone). Status amounts are strings
with two decimals; the gauges carry the same figures.

Alerts: each threshold of ``alertThresholds`` crossed in a period produces one
Warning event. The thresholds already announced are kept in
``status.thresholdsCrossed`` together with ``status.period``, and the status is
written before the events are posted, so an operator restart never repeats an
announcement (at the price of losing one if the process dies in between).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from aegis.sidecar.contract.money import ZERO, cents
from aegis.sidecar.contract.periods import period_of, zone
from aegis.sidecar.ledger.budget_status import budget_status
from aegis.sidecar.ledger.db import LedgerUnavailableError
from aegis.sidecar.ledger.report import budget_usage

from ..api import naming
from ..api.specs import LLMBudgetSpec
from ..kube import Body, Conflict, LLMBudget, Wanted, merge, timestamp
from ..metrics import BudgetFigures
from . import events
from .context import Context
from .render import ALL_NAMESPACES, AppliedBudget, describe_validation_error
from .route import BudgetIndex, RouteIndex

log = logging.getLogger("aegis.operator.controllers.budget")

_LEDGER_TIMEOUT = 15.0


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
        spec=parsed.budget(),
        routes=frozenset(parsed.routes),
        scope=scope,
    )


def scope_of(namespace: str, spec: Mapping[str, Any] | None, ctx: Context) -> set[str]:
    """Namespaces whose routes a budget body may affect (for fan-out on changes)."""
    view = applied_budget(namespace, "x", spec, ctx.options.platform_namespace)
    return {namespace} if view is None else set(view.scope)


def _month_start(period: str, tz_name: str) -> datetime:
    year, month = (int(part) for part in period.split("-"))
    return datetime(year, month, 1, tzinfo=zone(tz_name))


def _figures(limit: Decimal, spent: Decimal, reserved: Decimal, at: float) -> BudgetFigures:
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


def _routes_enforcing(view: AppliedBudget, routes: RouteIndex) -> str | None:
    keys = list(routes) if ALL_NAMESPACES in view.scope else sorted(view.scope)
    found = sorted(
        f"{ref.namespace}/{ref.name}"
        for key in keys
        for ref in routes.get(key, ())
        if view.applies_to(ref.namespace, ref.name, ref.providers)
    )
    return ",".join(found) or None


class _LedgerError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def _read_ledger(ctx: Context, view: AppliedBudget, period: str) -> tuple[Decimal, Decimal]:
    """(spent, reserved): the provider's settled spend in ``period`` and the money
    sidecars hold in leases of this budget but have not spent yet."""
    if ctx.ledger is None:
        raise _LedgerError(
            "LedgerNotConfigured",
            f"the operator has no ledger DSN (environment variable {naming.LEDGER_DSN_ENV})",
        )
    try:
        async with asyncio.timeout(_LEDGER_TIMEOUT):
            rows = await budget_usage(ctx.ledger, [view.spec], month=period)
            shared = await budget_status(ctx.ledger, month=period)
    except (SQLAlchemyError, OSError, TimeoutError, LedgerUnavailableError) as error:
        ctx.metrics.ledger_up.set(0)
        raise _LedgerError("LedgerUnavailable", f"cannot read the ledger: {error}") from None
    ctx.metrics.ledger_up.set(1)
    reserved = next(
        (
            s.reserved_usd
            for s in shared
            if (s.budget, s.provider) == (view.name, view.spec.provider)
        ),
        ZERO,
    )
    return (rows[0].spent_usd if rows else ZERO), reserved


def _alert_conditions(
    spec: LLMBudgetSpec, figures: BudgetFigures, pct: Decimal, crossed: list[int]
) -> list[Wanted]:
    spent = f"spent {cents(figures.spent)} of {cents(figures.limit)} USD ({pct}%)"
    below_100 = [t for t in crossed if t < 100]
    warning = (
        Wanted("Warning", "True", "ThresholdCrossed", f"{spent}: crossed {below_100[-1]}%")
        if below_100
        else Wanted("Warning", "False", "BelowThresholds", spent)
    )
    action = (
        "requests fall back to local providers"
        if spec.on_exceeded.value == "FallbackLocal"
        else "requests are refused (402)"
    )
    exceeded = (
        Wanted("Exceeded", "True", "LimitReached", f"{spent}: {action}")
        if figures.exceeded
        else Wanted("Exceeded", "False", "WithinLimit", spent)
    )
    return [warning, exceeded]


async def sync_budget(
    ctx: Context, namespace: str, name: str, routes: RouteIndex, budgets: BudgetIndex
) -> None:
    """Read the ledger and write the budget's status, gauges and alert events."""
    async with ctx.locks.hold(("LLMBudget", namespace, name)):
        budget = await ctx.kube.get(LLMBudget, name, namespace=namespace)
        if budget is None or budget["metadata"].get("deletionTimestamp"):
            return
        await _sync(ctx, budget, routes, budgets)


def _namesakes(namespace: str, name: str, budgets: BudgetIndex) -> list[str]:
    """Budgets of the same name in other namespaces: sidecars share budget money by
    name in the ledger, so two of them would share one limit."""
    keys = {view.key for views in budgets.values() for view in views}
    return sorted(k for k in keys if k.endswith(f"/{name}") and k != f"{namespace}/{name}")


def _scope_problem(ctx: Context, namespace: str, spec: LLMBudgetSpec) -> Wanted | None:
    if not spec.namespaces or namespace == ctx.options.platform_namespace:
        return None
    return Wanted(
        "Ready",
        "False",
        "ScopeNotAllowed",
        f"spec.namespaces is honoured only for LLMBudgets in the platform namespace "
        f"({ctx.options.platform_namespace or 'none configured'}); this budget applies "
        f"to routes in {namespace} only",
    )


async def _sync(ctx: Context, budget: Body, routes: RouteIndex, budgets: BudgetIndex) -> None:
    meta, status = budget["metadata"], budget.get("status") or {}
    namespace, name = meta["namespace"], meta["name"]
    now = ctx.now()
    wanted: list[Wanted]
    fields: Body = {}
    alerts: list[tuple[str, str]] = []
    try:
        spec = parse_budget(name, budget.get("spec"))
    except ValidationError as error:
        message = describe_validation_error(error)
        wanted = [Wanted("Ready", "False", "InvalidSpec", message)]
        return await _write(ctx, budget, wanted, fields, alerts)
    view = applied_budget(namespace, name, budget.get("spec"), ctx.options.platform_namespace)
    assert view is not None
    period = period_of(now, zone(spec.timezone))
    fields["routes"] = _routes_enforcing(view, routes)
    problem = _scope_problem(ctx, namespace, spec)
    namesakes = _namesakes(namespace, name, budgets)
    if namesakes:
        problem = Wanted(
            "Ready",
            "False",
            "NameConflict",
            f"LLMBudget {', '.join(namesakes)} has the same name; sidecars share budget money "
            "by name in the ledger, so these budgets would share one limit: rename one",
        )
    try:
        spent, reserved = await _read_ledger(ctx, view, period)
    except _LedgerError as error:
        wanted = [problem or Wanted("Ready", "False", error.reason, error.message)]
        return await _write(ctx, budget, wanted, fields, alerts)
    figures = _figures(spec.limit_usd, spent, reserved, now.timestamp())
    pct = _percent(figures)
    ctx.metrics.set_budget(namespace, name, spec.provider, figures)
    same_period = status.get("period") == period
    announced = list(status.get("thresholdsCrossed") or []) if same_period else []
    crossed = sorted(t for t in set(spec.alert_thresholds) if pct >= t)
    for threshold in (t for t in crossed if t not in announced):
        reason = "BudgetExceeded" if threshold >= 100 else "BudgetThresholdCrossed"
        figure = f"{cents(spent)} of {cents(spec.limit_usd)} USD ({pct}%)"
        message = f"{spec.provider} spend in {period} is {figure}: crossed the {threshold}%"
        alerts.append((reason, f"{message} alert threshold"))
    fields.update(
        period=period,
        periodStart=timestamp(_month_start(period, spec.timezone)),
        limitUSD=cents(figures.limit),
        spentUSD=cents(figures.spent),
        reservedUSD=cents(figures.reserved),
        remainingUSD=cents(figures.remaining),
        utilisation=f"{pct}%",
        thresholdsCrossed=sorted(set(announced) | set(crossed)),
    )
    ready = problem or Wanted("Ready", "True", "Synced", f"read the ledger for {period}")
    wanted = [ready, *_alert_conditions(spec, figures, pct, crossed)]
    await _write(ctx, budget, wanted, fields, alerts, synced=now)


async def _write(
    ctx: Context,
    budget: Body,
    wanted: list[Wanted],
    fields: Body,
    alerts: list[tuple[str, str]],
    *,
    synced: datetime | None = None,
) -> None:
    meta, status = budget["metadata"], budget.get("status") or {}
    generation = int(meta.get("generation", 0))
    now = ctx.now()
    conditions = merge(status.get("conditions") or [], wanted, generation, now)
    new = {**fields, "observedGeneration": generation, "conditions": conditions}
    changed = any(status.get(key) != value for key, value in new.items())
    if synced is not None:
        last = status.get("lastSync")
        age = None if last is None else (now - datetime.fromisoformat(last)).total_seconds()
        stale = age is None or age >= ctx.options.sync_heartbeat
        if changed or stale:
            new["lastSync"] = timestamp(synced)
            changed = True
    if changed:
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": new}
        try:
            await ctx.kube.merge_patch(
                LLMBudget, meta["name"], patch, namespace=meta["namespace"], status=True
            )
        except Conflict:  # changed meanwhile: the next tick sees the new one
            return
    ctx.metrics.reconciles.labels("LLMBudget", "changed" if changed else "unchanged").inc()
    for reason, message in alerts:
        events.post(budget, "Warning", reason, message)
    if wanted[0].status == "False" and changed:
        old = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if old is None or old.get("reason") != wanted[0].reason:
            events.post(budget, "Warning", wanted[0].reason, wanted[0].message)
