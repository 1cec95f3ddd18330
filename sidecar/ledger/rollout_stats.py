"""Per-arm rollout statistics for the operator's analysis step.

For one route and a window (``since`` .. ``until``): per arm the number of
requests, the error rate, the p95 latency of successful requests and the cost.
Refusals by the sidecar itself (budget, privacy) are not the arm's errors and
are left out; cancelled requests count as requests but not as errors.

One query per arm, each a range scan of ``ix_ledger_entries_route_arm_created_at``
(route and arm equal, created_at in the window); on PostgreSQL the index also
carries status, latency and cost (migration 0002), so it never reads the table.
p95 is nearest-rank: ``percentile_disc`` on PostgreSQL, a window function on
SQLite; both pick the smallest latency whose rank r satisfies r >= 0.95 n.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Integer, case, func, select
from sqlalchemy.sql import Select

from ..contract import Arm
from ..contract.money import ZERO
from .models import LedgerEntry, Status
from .source import LedgerSource, open_engine


@dataclass(frozen=True, slots=True)
class ArmStats:
    arm: str
    requests: int
    errors: int
    p95_latency_ms: int | None  # None without a successful request
    cost_usd: Decimal

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _window(
    arm: str, route: str, since: datetime, until: datetime | None, namespace: str | None
) -> list[ColumnElement[bool]]:
    e = LedgerEntry
    where = [
        e.route == route,
        e.arm == arm,
        e.created_at >= since,
        e.status != Status.REFUSED.value,
    ]
    if until is not None:
        where.append(e.created_at < until)
    if namespace is not None:
        # routes are namespaced; the (route, arm, created_at) index still narrows first
        where.append(e.namespace == namespace)
    return where


def _totals(where: list[ColumnElement[bool]]) -> Select[Any]:
    e = LedgerEntry
    return select(
        func.count(),
        func.coalesce(func.sum(case((e.status == Status.ERROR.value, 1), else_=0)), 0),
        func.coalesce(func.sum(e.cost_usd), 0),
    ).where(*where)


def _p95(dialect: str, where: list[ColumnElement[bool]]) -> Select[Any]:
    e = LedgerEntry
    ok = [*where, e.status == Status.OK.value]
    if dialect == "postgresql":
        return select(func.percentile_disc(0.95).within_group(e.latency_ms).cast(Integer)).where(
            *ok
        )
    ranked = (
        select(
            e.latency_ms,
            func.row_number().over(order_by=e.latency_ms).label("rn"),
            func.count().over().label("n"),
        )
        .where(*ok)
        .subquery()
    )
    r = ranked.c
    return select(func.min(r.latency_ms).cast(Integer)).where(r.rn * 100 >= r.n * 95)


async def arm_stats(
    source: LedgerSource,
    route: str,
    since: datetime,
    until: datetime | None = None,
    *,
    namespace: str | None = None,
) -> dict[str, ArmStats]:
    """Statistics of both arms of ``route`` (in ``namespace`` when given) for requests
    created in the window."""
    result: dict[str, ArmStats] = {}
    async with open_engine(source) as engine, engine.connect() as connection:
        for arm in Arm:
            where = _window(arm.value, route, since, until, namespace)
            totals = (await connection.execute(_totals(where))).one()
            requests, errors, cost = totals[0], totals[1], totals[2]
            p95 = (await connection.execute(_p95(engine.dialect.name, where))).scalar()
            result[arm.value] = ArmStats(
                arm=arm.value,
                requests=int(requests),
                errors=int(errors),
                p95_latency_ms=None if p95 is None else int(p95),
                cost_usd=Decimal(cost).quantize(ZERO) if cost else ZERO,
            )
    return result
