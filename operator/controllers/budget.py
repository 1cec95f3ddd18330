"""``LLMBudget``: its scope (for routes) and its status from the ledger.

Each sync starts from the budget kopf handed over, reads the ledger (spend with
:func:`aegis.sidecar.ledger.report.budget_usage`, the same query ``aegis ledger
report`` uses: the provider's settled spend in the budget's current calendar
month, in the budget's time zone; and the money sidecars hold in leases), plans
in pure code (:mod:`.budget_plan`) and applies the plan: gauges, status, events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from aegis.sidecar.contract.money import ZERO
from aegis.sidecar.ledger.budget_status import budget_status
from aegis.sidecar.ledger.db import LedgerUnavailableError
from aegis.sidecar.ledger.report import budget_usage

from ..api import naming
from ..kube import Body, Conflict, LLMBudget
from . import events
from .budget_plan import (
    BudgetPlan,
    LedgerProblem,
    PreparedBudget,
    Spend,
    applied_budget,
    plan_budget,
    prepare_budget,
)
from .context import Context
from .indices import BudgetIndex, RouteIndex

_LEDGER_TIMEOUT = 15.0


def scope_of(namespace: str, spec: Mapping[str, Any] | None, ctx: Context) -> set[str]:
    """Namespaces whose routes a budget body may affect (for fan-out on changes)."""
    applied = applied_budget(namespace, "x", spec, ctx.options.platform_namespace)
    return {namespace} if applied is None else set(applied.scope)


async def _read_ledger(ctx: Context, prepared: PreparedBudget) -> Spend | LedgerProblem:
    """The provider's settled spend in the period and the money sidecars hold in
    leases of this budget but have not spent yet."""
    applied = prepared.applied
    assert applied is not None
    if ctx.ledger is None:
        return LedgerProblem(
            "LedgerNotConfigured",
            f"the operator has no ledger DSN (environment variable {naming.LEDGER_DSN_ENV})",
        )
    try:
        async with asyncio.timeout(_LEDGER_TIMEOUT):
            rows = await budget_usage(ctx.ledger, [applied.spec], month=prepared.period)
            shared = await budget_status(ctx.ledger, month=prepared.period)
    except (SQLAlchemyError, OSError, TimeoutError, LedgerUnavailableError) as error:
        ctx.metrics.ledger_up.set(0)
        return LedgerProblem("LedgerUnavailable", f"cannot read the ledger: {error}")
    ctx.metrics.ledger_up.set(1)
    reserved = next(
        (
            s.reserved_usd
            for s in shared
            if (s.budget, s.provider) == (applied.name, applied.spec.provider)
        ),
        ZERO,
    )
    return Spend(rows[0].spent_usd if rows else ZERO, reserved)


async def _apply(ctx: Context, budget: Body, plan: BudgetPlan) -> None:
    meta = budget["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if plan.gauges is not None:
        ctx.metrics.set_budget(namespace, name, *plan.gauges)
    if plan.status is not None:
        try:
            await ctx.kube.merge_patch(
                LLMBudget, name, plan.status, namespace=namespace, status=True
            )
        except Conflict:  # changed meanwhile: the next tick sees the new one
            return
    outcome = "changed" if plan.status is not None else "unchanged"
    ctx.metrics.reconciles.labels("LLMBudget", outcome).inc()
    for event in plan.events:
        events.post(budget, *event)


async def sync_budget(ctx: Context, budget: Body, routes: RouteIndex, budgets: BudgetIndex) -> None:
    """Read the ledger and write the budget's status, gauges and alert events."""
    meta = budget["metadata"]
    async with ctx.locks.hold(("LLMBudget", meta["namespace"], meta["name"])):
        if meta.get("deletionTimestamp"):
            return
        now = ctx.now()
        prepared = prepare_budget(budget, ctx.options.platform_namespace, now)
        ledger = None if prepared.invalid is not None else await _read_ledger(ctx, prepared)
        plan = plan_budget(
            budget,
            prepared,
            ledger,
            routes,
            budgets,
            platform_namespace=ctx.options.platform_namespace,
            heartbeat=ctx.options.sync_heartbeat,
            now=now,
        )
        await _apply(ctx, budget, plan)
