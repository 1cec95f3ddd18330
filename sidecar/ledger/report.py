"""The read side of the ledger: monthly aggregation, budget utilisation, export.

These are the functions behind ``aegis ledger report`` and ``aegis ledger
export``; the operator reuses :func:`usage` and :func:`budget_usage` for budget
status. Everything is one SQL statement per question and dialect-neutral
(window functions exist on SQLite >= 3.25 and PostgreSQL), so the same code
reads a standalone SQLite file and the shared PostgreSQL ledger.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, TextIO

from sqlalchemy import ColumnClause, Integer, func, literal_column, select

from ..contract import BudgetSpec
from ..contract.money import MICRO, ZERO, micros
from ..contract.periods import PeriodKind, check_period, period_of, zone
from .budget_status import budget_status, render_breakdown, render_budget_status, spend_breakdown
from .models import COLUMNS, LedgerEntry, LedgerSummary, Status
from .source import LedgerSource, open_engine
from .spend import as_instant, quarter_hour_sql
from .tables import percent, text_table

ExportFormat = Literal["csv", "json"]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Spend and traffic of one model of one provider in one namespace and month."""

    month: str
    namespace: str
    provider: str
    model: str
    requests: int
    errors: int
    refused: int
    tokens_in: int
    tokens_out: int
    cost_usd: Decimal
    p95_latency_ms: int | None  # successful requests only; None when there were none


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """A budget's settled spend in one period (``month``: its key, a day, an ISO week
    or a month; reservations live only in sidecars)."""

    budget: str
    provider: str
    month: str
    limit_usd: Decimal
    spent_usd: Decimal
    remaining_usd: Decimal
    utilisation: Decimal | None  # spent / limit; None for a zero limit

    @property
    def exceeded(self) -> bool:
        return self.spent_usd >= self.limit_usd


async def usage(source: LedgerSource, month: str | None = None) -> list[UsageRow]:
    """Requests, errors, tokens, cost and p95 latency per month, namespace, provider and
    model (namespaces are never summed together: each is a tenant of its own).

    The totals come from the summary table (:class:`~.models.LedgerSummary`), so
    months whose raw rows retention removed keep them; p95 latency needs the raw rows
    (``None`` without)."""
    e, s = LedgerEntry, LedgerSummary
    keys = (e.period, e.namespace, e.provider, e.model)
    in_month = [] if month is None else [e.period == check_period(month)]
    summed = (s.period, s.namespace, s.provider, s.model)
    totals = select(
        *summed,
        func.sum(s.requests),
        func.sum(s.errors),
        func.sum(s.refused),
        func.sum(s.tokens_in),
        func.sum(s.tokens_out),
        func.sum(s.cost_usd),
    ).group_by(*summed)
    if month is not None:
        totals = totals.where(s.period == check_period(month))
    # Nearest-rank p95 with window functions: the smallest latency whose rank r
    # satisfies r >= 0.95 n, written as 100 r >= 95 n to stay in integers.
    ranked = (
        select(
            *keys,
            e.latency_ms,
            func.row_number().over(partition_by=keys, order_by=e.latency_ms).label("rn"),
            func.count().over(partition_by=keys).label("n"),
        )
        .where(e.status == Status.OK.value, *in_month)
        .subquery()
    )
    r = ranked.c
    p95 = (
        select(r.period, r.namespace, r.provider, r.model, func.min(r.latency_ms).cast(Integer))
        .where(r.rn * 100 >= r.n * 95)
        .group_by(r.period, r.namespace, r.provider, r.model)
    )
    async with open_engine(source) as engine, engine.connect() as connection:
        latency = {(m, ns, p, mo): v for m, ns, p, mo, v in await connection.execute(p95)}
        result = await connection.execute(totals.order_by(*summed))
        return [
            UsageRow(
                month=period,
                namespace=namespace,
                provider=provider,
                model=model,
                requests=int(requests),
                errors=int(errors or 0),
                refused=int(refused or 0),
                tokens_in=int(tokens_in or 0),
                tokens_out=int(tokens_out or 0),
                cost_usd=cost if cost is not None else ZERO,
                p95_latency_ms=latency.get((period, namespace, provider, model)),
            )
            for (
                period,
                namespace,
                provider,
                model,
                requests,
                errors,
                refused,
                tokens_in,
                tokens_out,
                cost,
            ) in result
        ]


async def budget_usage(
    source: LedgerSource,
    budgets: Sequence[BudgetSpec],
    month: str | None = None,
    *,
    now: datetime | None = None,
    namespace: str | None = None,
) -> list[BudgetUsage]:
    """Utilisation of each budget in its periods with spend (of ``month``'s rows
    only, when given): the spend of the calls its filters match, in ``namespace`` (a
    standalone sidecar's: its config's identity) or, without one, in every namespace
    of the ledger. A Monthly budget's period is the row's month; a Daily or Weekly
    budget's is that of the quarter hour the row was written in, in its time zone.

    A budget without spend is reported for its current period (in the budget's time
    zone, at ``now``; a Monthly one for ``month`` when given) with zero spend.
    """
    if not budgets:
        return []
    e = LedgerEntry
    async with open_engine(source) as engine, engine.connect() as connection:
        quarter: ColumnClause[Any] = literal_column(
            quarter_hour_sql(engine.dialect.name == "sqlite")
        )
        keys = (e.provider, e.model, e.data_class, e.period, quarter)
        query = select(*keys, func.sum(e.cost_usd)).where(e.cost_usd > 0).group_by(*keys)
        if namespace is not None:
            query = query.where(e.namespace == namespace)
        if month is not None:
            query = query.where(e.period == check_period(month))
        rows = list(await connection.execute(query))
    instant = now or datetime.now(UTC)
    result: list[BudgetUsage] = []
    for budget in budgets:
        tz, kind = zone(budget.timezone), budget.period
        spend: dict[str, Decimal] = {}
        for provider, model, data_class, row_month, bucket, total in rows:
            if budget.applies(provider, models=(model,), data_class=data_class):
                key = (
                    row_month
                    if kind is PeriodKind.MONTHLY
                    else period_of(as_instant(bucket), tz, kind)
                )
                spend[key] = spend.get(key, ZERO) + total
        if not spend:
            if month is not None and kind is PeriodKind.MONTHLY:
                spend[month] = ZERO
            elif month is None:
                spend[period_of(instant, tz, kind)] = ZERO
        result += [_budget_row(budget, key, spend[key]) for key in sorted(spend)]
    result.sort(key=lambda row: row.month)  # stable: config order within a period
    return result


def _budget_row(budget: BudgetSpec, month: str, spent: Decimal) -> BudgetUsage:
    limit = budget.limit_usd
    ratio = (spent / limit).quantize(MICRO) if limit > 0 else None
    return BudgetUsage(
        budget=budget.name,
        provider=",".join(budget.provider_names) or "*",
        month=month,
        limit_usd=limit,
        spent_usd=spent,
        remaining_usd=max(limit - spent, ZERO),
        utilisation=ratio,
    )


async def iter_entries(
    source: LedgerSource, month: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Every ledger row (of ``month``), oldest first, streamed from the database."""
    e = LedgerEntry
    query = select(*(getattr(e, name) for name in COLUMNS)).order_by(e.created_at, e.request_id)
    if month is not None:
        query = query.where(e.period == check_period(month))
    async with open_engine(source) as engine, engine.connect() as connection:
        result = await connection.stream(query)
        async for row in result:
            yield dict(zip(COLUMNS, row, strict=True))


def _text(value: Any) -> Any:
    """JSON/CSV form: money as an exact decimal string, instants in ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def export(
    url: LedgerSource,
    fmt: ExportFormat = "csv",
    month: str | None = None,
    out: TextIO | None = None,
) -> int:
    """``aegis ledger export``: write rows as CSV (header first) or a JSON array.

    Money is written as a decimal string (``"0.001230"``), never a float, so an
    export sums exactly. Returns the number of rows written.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown export format {fmt!r}: use csv or json")
    if out is None:
        out = sys.stdout
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        async for entry in iter_entries(url, month):
            writer.writerow(["" if v is None else _text(v) for v in entry.values()])
            count += 1
        return count
    out.write("[")
    async for entry in iter_entries(url, month):
        out.write(",\n" if count else "\n")
        out.write(json.dumps({k: _text(v) for k, v in entry.items()}, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


async def report(
    url: LedgerSource,
    budgets: Sequence[BudgetSpec] = (),
    month: str | None = None,
    *,
    now: datetime | None = None,
    namespace: str | None = None,
) -> str:
    """``aegis ledger report``: spend tables for a terminal (aligned, plain text);
    ``namespace``: the one the config's budgets are of."""
    rows = await usage(url, month)
    budget_rows = await budget_usage(url, budgets, month, now=now, namespace=namespace)
    text = render_report(rows, budget_rows, month)
    # The shared (leased) budgets and the spend per namespace and route.
    extra = render_budget_status(await budget_status(url, month))
    extra += render_breakdown(await spend_breakdown(url, month))
    return text + "".join(line + "\n" for line in extra)


def render_report(
    rows: Sequence[UsageRow], budget_rows: Sequence[BudgetUsage], month: str | None = None
) -> str:
    """Render :func:`usage` and :func:`budget_usage` results as two aligned tables."""
    scope = f"month {month}" if month else "all months"
    lines = [f"Aegis ledger: spend by month, namespace, provider and model ({scope})", ""]
    if not rows:
        lines.append("(no requests recorded)")
    else:
        table = [
            [
                r.month,
                r.namespace,
                r.provider,
                r.model,
                f"{r.requests:,}",
                f"{r.errors:,}",
                f"{r.refused:,}",
                f"{r.tokens_in:,}",
                f"{r.tokens_out:,}",
                micros(r.cost_usd, grouped=True),
                "-" if r.p95_latency_ms is None else f"{r.p95_latency_ms:,}",
            ]
            for r in rows
        ]
        table.append(
            [
                "total",
                "",
                "",
                "",
                f"{sum(r.requests for r in rows):,}",
                f"{sum(r.errors for r in rows):,}",
                f"{sum(r.refused for r in rows):,}",
                f"{sum(r.tokens_in for r in rows):,}",
                f"{sum(r.tokens_out for r in rows):,}",
                micros(sum((r.cost_usd for r in rows), ZERO), grouped=True),
                "",
            ]
        )
        headers = [
            "MONTH",
            "NAMESPACE",
            "PROVIDER",
            "MODEL",
            "REQUESTS",
            "ERRORS",
            "REFUSED",
            "TOKENS IN",
            "TOKENS OUT",
            "COST USD",
            "P95 MS",
        ]
        lines += text_table(headers, table, right=set(range(4, 11)))
    if budget_rows:
        lines += ["", "Budgets (settled spend; in-flight reservations are not in the ledger)", ""]
        table = [
            [
                b.month,
                b.budget,
                b.provider,
                micros(b.limit_usd, grouped=True),
                micros(b.spent_usd, grouped=True),
                micros(b.remaining_usd, grouped=True),
                percent(b.utilisation),
                "EXCEEDED" if b.exceeded else "",
            ]
            for b in budget_rows
        ]
        headers = [
            "MONTH",
            "BUDGET",
            "PROVIDER",
            "LIMIT USD",
            "SPENT USD",
            "REMAINING USD",
            "USED",
            "STATE",
        ]
        lines += text_table(headers, table, right={3, 4, 5, 6})
    return "\n".join(lines) + "\n"
