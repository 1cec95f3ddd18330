"""Shared budgets as the operator and ``aegis ledger report`` read them.

Per budget (its key: scope, namespace, name) and period (its own: a day, an ISO
week or a month in its time zone, named by the key; from ``budget_periods`` and
``budget_leases``), so each budget's figures are its own, whoever else spends the
same provider:
``spent`` is what ledger rows settled against leases; ``reserved`` is money
leased to sidecars but not (yet) settled: in-flight reservations, unspent
slices, rows still in a spool; ``remaining`` is what no sidecar holds;
``utilisation`` is (spent + reserved) / limit, the share no one else can take.

Also the month's spend per namespace, route, provider and model, from the ledger's
summary table (:class:`~.models.LedgerSummary`: one row per key, kept as rows are inserted), never
from the raw rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import and_, case, func, select
from sqlalchemy.exc import DBAPIError

from ..contract import BudgetKey, BudgetScope
from ..contract.money import MICRO, ZERO, micros
from ..contract.periods import PeriodKind, check_period, check_period_key, period_kind
from .models import BudgetLease, BudgetPeriod, LedgerSummary
from .source import LedgerSource, open_engine
from .tables import percent, text_table


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    key: BudgetKey
    provider: str
    month: str  # the period's key (a day, an ISO week or a month)
    limit_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    remaining_usd: Decimal
    utilisation: Decimal | None  # None for a zero limit
    overdraft_usd: Decimal  # spend that arrived beyond a lease (should stay 0)
    holders: int  # sidecars holding unspent money now
    # Kept charged for calls whose outcome the ledger never learnt (a sidecar that
    # died with calls in flight): part of reserved, never given back this period.
    unknown_usd: Decimal = ZERO

    @property
    def budget(self) -> str:
        return self.key.name

    @property
    def period(self) -> str:
        return self.month

    @property
    def kind(self) -> PeriodKind:
        """Daily, Weekly or Monthly: what the period key names."""
        return period_kind(self.month)

    @property
    def exceeded(self) -> bool:
        """Settled spend reached the limit (a ``Notify`` budget's calls went on)."""
        return self.spent_usd >= self.limit_usd


@dataclass(frozen=True, slots=True)
class SpendRow:
    month: str
    namespace: str
    route: str
    provider: str
    model: str
    requests: int
    cost_usd: Decimal


async def budget_status(
    source: LedgerSource,
    month: str | None = None,
    *,
    budget: BudgetKey | None = None,
    namespace: str | None = None,
) -> list[BudgetStatus]:
    """Every shared budget's periods (or the period with key ``month``: a day, an ISO
    week or a month; of ``budget`` only, or of the budgets of ``namespace`` only),
    oldest first within a kind. Empty when the ledger has no budget tables yet (a
    ledger at revision 0001)."""
    p, lease = BudgetPeriod, BudgetLease
    holding = and_(lease.state == "open", lease.amount_usd > lease.settled_usd)
    # A reclaimed lease (its holder gone, not back): all it still holds is unknown.
    unsettled = lease.amount_usd - lease.settled_usd
    unknown = case(
        (and_(lease.reclaimed_at.is_not(None), unsettled > lease.unknown_usd), unsettled),
        else_=lease.unknown_usd,
    )
    key = (p.budget_scope, p.budget_namespace, p.budget_name)
    same = and_(
        lease.budget_scope == p.budget_scope,
        lease.budget_namespace == p.budget_namespace,
        lease.budget_name == p.budget_name,
    )
    query = (
        select(
            *key,
            p.provider,
            p.period,
            p.limit_usd,
            p.committed_usd,
            p.overdraft_usd,
            func.coalesce(func.sum(lease.settled_usd), 0),
            func.count(case((holding, 1))),
            func.coalesce(func.sum(unknown), 0),
        )
        .outerjoin(lease, and_(same, lease.period == p.period))
        .group_by(*key, p.provider, p.period, p.limit_usd, p.committed_usd, p.overdraft_usd)
        .order_by(p.period, *key)
    )
    if month is not None:
        query = query.where(p.period == check_period_key(month))
    if budget is not None:
        query = query.where(
            p.budget_scope == budget.scope.value,
            p.budget_namespace == budget.namespace,
            p.budget_name == budget.name,
        )
    if namespace is not None:
        query = query.where(p.budget_namespace == namespace)
    async with open_engine(source) as engine, engine.connect() as connection:
        try:
            rows = list(await connection.execute(query))
        except DBAPIError:  # no such table: nothing shared yet
            return []
    result = []
    for (
        scope,
        budget_ns,
        name,
        provider,
        period,
        limit,
        committed,
        overdraft,
        settled,
        holders,
        unknown_usd,
    ) in rows:
        spent = Decimal(settled).quantize(MICRO)
        result.append(
            BudgetStatus(
                key=BudgetKey(BudgetScope(scope), budget_ns, name),
                provider=provider,
                month=period,
                limit_usd=limit,
                spent_usd=spent,
                reserved_usd=max(committed - spent, ZERO),
                remaining_usd=max(limit - committed, ZERO),
                utilisation=(committed / limit).quantize(MICRO) if limit > 0 else None,
                overdraft_usd=overdraft,
                holders=int(holders),
                unknown_usd=Decimal(unknown_usd).quantize(MICRO),
            )
        )
    return result


async def spend_breakdown(source: LedgerSource, month: str | None = None) -> list[SpendRow]:
    """Requests and cost per month, namespace, route, provider and model: the summary
    table's rows (one per key), which also hold months whose raw rows were dropped."""
    s = LedgerSummary
    keys = (s.period, s.namespace, s.route, s.provider, s.model)
    query = select(*keys, s.requests, s.cost_usd).order_by(*keys)
    if month is not None:
        query = query.where(s.period == check_period(month))
    async with open_engine(source) as engine, engine.connect() as connection:
        return [
            SpendRow(period, namespace, route, provider, model, int(count), cost or ZERO)
            for period, namespace, route, provider, model, count, cost in await connection.execute(
                query
            )
        ]


def render_budget_status(rows: Sequence[BudgetStatus]) -> list[str]:
    """Report lines for the shared budgets (nothing when there are none)."""
    if not rows:
        return []
    headers = [
        "PERIOD",
        "SCOPE",
        "NAMESPACE",
        "BUDGET",
        "PROVIDER",
        "LIMIT USD",
        "SPENT USD",
        "RESERVED USD",
        "REMAINING USD",
        "USED",
        "SIDECARS",
    ]
    table = [
        [
            r.month,
            r.key.scope.value,
            r.key.namespace or "-",
            r.key.name,
            r.provider,
            micros(r.limit_usd, grouped=True),
            micros(r.spent_usd, grouped=True),
            micros(r.reserved_usd, grouped=True),
            micros(r.remaining_usd, grouped=True),
            percent(r.utilisation),
            str(r.holders),
        ]
        for r in rows
    ]
    title = "Shared budgets (leases: reserved = leased to sidecars, not yet settled)"
    return ["", title, "", *text_table(headers, table, right=set(range(5, 11)))]


def render_breakdown(rows: Sequence[SpendRow]) -> list[str]:
    if not rows:
        return []
    headers = ["MONTH", "NAMESPACE", "ROUTE", "PROVIDER", "MODEL", "REQUESTS", "COST USD"]
    table = [
        [
            r.month,
            r.namespace,
            r.route,
            r.provider,
            r.model,
            f"{r.requests:,}",
            micros(r.cost_usd, grouped=True),
        ]
        for r in rows
    ]
    return ["", "Spend by namespace and route", "", *text_table(headers, table, right={5, 6})]
