"""``LLMBudget``: its limit in the ledger, its scope (for routes) and its status.

Each sync starts from the budget kopf handed over, writes its limit, provider and
spending namespaces to the ledger (the control role's ``aegis.set_budget``: the only
limit sidecars' leases are checked against), reads the budget's own figures
(:func:`aegis.sidecar.ledger.budget_status.budget_status` for its key: what the
sidecars' ledger rows settled against its leases in the budget's current period
(a day, an ISO week or a month in its time zone), and what they hold; never the
provider's spend of other budgets or namespaces), plans in pure code
(:mod:`.budget_plan`) and applies the plan: gauges, status, events. A deleted (or
invalid) budget is dropped from the ledger: no sidecar can spend it any more; its
history stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from aegis.sidecar.contract import BudgetKey, BudgetScope
from aegis.sidecar.contract.money import ZERO
from aegis.sidecar.contract.schema import BudgetSpec
from aegis.sidecar.ledger import control
from aegis.sidecar.ledger.budget_status import budget_status
from aegis.sidecar.ledger.db import LedgerUnavailableError

from ..api import naming
from ..kube import Body, Conflict, LLMBudget
from . import events
from .budget_plan import (
    BudgetPlan,
    LedgerProblem,
    PreparedBudget,
    Spend,
    applied_budget,
    ledger_provider,
    plan_budget,
    prepare_budget,
)
from .context import Context
from .indices import BudgetIndex, RouteIndex

_LEDGER_TIMEOUT = 15.0
log = logging.getLogger(__name__)


def scope_of(namespace: str, spec: Mapping[str, Any] | None, ctx: Context) -> set[str]:
    """Namespaces whose routes a budget body may affect (for fan-out on changes)."""
    applied = applied_budget(namespace, "x", spec, ctx.options.platform_namespace)
    return {namespace} if applied is None else set(applied.scope)


_LEDGER_ERRORS = (SQLAlchemyError, OSError, TimeoutError, LedgerUnavailableError)


def budget_key(namespace: str, name: str) -> BudgetKey:
    """An ``LLMBudget``'s key in the ledger (namespaced: its own namespace and name)."""
    return BudgetKey(BudgetScope.NAMESPACE, namespace, name)


async def write_limit(
    ctx: Context, key: BudgetKey, spec: BudgetSpec, spenders: Iterable[str]
) -> LedgerProblem | None:
    """A budget's limit, provider, spending namespaces and rate limits, as sidecars'
    leases see them; the problem when they could not be written."""
    if ctx.control is None:
        return LedgerProblem(
            "LimitNotWritten",
            f"the operator has no ledger control DSN ({naming.LEDGER_CONTROL_DSN_ENV}): "
            "sidecars on the shared ledger cannot spend this budget",
        )
    try:
        async with asyncio.timeout(_LEDGER_TIMEOUT), ctx.control.connect() as connection:
            await control.set_budget(
                connection,
                key,
                provider=ledger_provider(spec),
                limit=spec.limit_usd,
                spenders=spenders,
            )
            limits = spec.rate_limits  # shared by every sidecar spending the budget
            await control.set_rate_limits(
                connection,
                key,
                requests_per_minute=limits.requests_per_minute if limits else None,
                tokens_per_minute=limits.tokens_per_minute if limits else None,
            )
    except _LEDGER_ERRORS as error:
        return LedgerProblem("LimitNotWritten", f"cannot write the limit to the ledger: {error}")
    return None


async def drop_key(ctx: Context, key: BudgetKey) -> None:
    """No sidecar may spend the budget any more (deleted, or its spec became invalid)."""
    if ctx.control is None:
        return
    try:
        async with asyncio.timeout(_LEDGER_TIMEOUT), ctx.control.connect() as connection:
            await control.drop_budget(connection, key)
    except _LEDGER_ERRORS:
        log.exception("could not drop budget %s from the ledger", key)


async def drop_limit(ctx: Context, namespace: str, name: str) -> None:
    """No sidecar may spend the LLMBudget any more."""
    await drop_key(ctx, budget_key(namespace, name))


async def read_spend(
    ctx: Context, key: BudgetKey, spec: BudgetSpec, spenders: Iterable[str], period: str
) -> Spend | LedgerProblem:
    """Write the limit, then read what the budget's own leases settled in ``period``
    and the money sidecars hold in them but have not spent yet."""
    if ctx.ledger is None:
        return LedgerProblem(
            "LedgerNotConfigured",
            f"the operator has no ledger DSN (environment variable {naming.LEDGER_DSN_ENV})",
        )
    problem = await write_limit(ctx, key, spec, spenders)
    try:
        async with asyncio.timeout(_LEDGER_TIMEOUT):
            rows = await budget_status(ctx.ledger, month=period, budget=key)
    except _LEDGER_ERRORS as error:
        ctx.metrics.ledger_up.set(0)
        return LedgerProblem("LedgerUnavailable", f"cannot read the ledger: {error}")
    ctx.metrics.ledger_up.set(1)
    if problem is not None:
        return problem
    if not rows:
        return Spend(ZERO, ZERO)
    return Spend(rows[0].spent_usd, rows[0].reserved_usd, rows[0].unknown_usd)


async def _read_ledger(ctx: Context, prepared: PreparedBudget) -> Spend | LedgerProblem:
    applied = prepared.applied
    assert applied is not None
    key = budget_key(applied.namespace, applied.name)
    return await read_spend(ctx, key, applied.spec, applied.scope, prepared.period)


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
        if prepared.invalid is not None:
            await drop_limit(ctx, meta["namespace"], meta["name"])
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
