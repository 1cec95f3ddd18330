"""Spend grouped by attribution keys: ``aegis ledger report --by`` and its CSV/JSON export.

One ``GROUP BY`` over ``ledger_entries`` by any of the keys in :data:`GROUP_KEYS`
(namespace, workload, ServiceAccount, route, provider, model, month), for a ledger
month (the ``period`` column: the month each request's money was reserved in, as
budgets count it) or for any Daily/Weekly/Monthly period key in a time zone (the
rows whose ``created_at`` falls inside it), or for every row. Dialect-neutral: the
same statement reads SQLite and PostgreSQL. It reads the whole ledger, so on
PostgreSQL it needs ``SELECT`` on ``aegis.ledger_entries``: the owner's or the reader
role's DSN, never a tenant's (tenants may only execute the write functions).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any, Literal, TextIO

from sqlalchemy import case, func, select
from sqlalchemy.orm import InstrumentedAttribute

from ..contract.money import ZERO, micros
from ..contract.periods import check_period, period_bounds
from .models import LedgerEntry, Status
from .source import LedgerSource, open_engine
from .tables import text_table

e = LedgerEntry
GROUP_KEYS: dict[str, InstrumentedAttribute[Any]] = {
    "namespace": e.namespace,
    "workload": e.workload,
    "service_account": e.service_account,
    "route": e.route,
    "provider": e.provider,
    "model": e.model,
    "month": e.period,
}
"""The keys spend can be grouped by, and their columns (``month``: the ledger's period)."""
FIGURES = ("requests", "errors", "refused", "tokens_in", "tokens_out", "cost_usd")
GroupFormat = Literal["text", "csv", "json"]


@dataclass(frozen=True, slots=True)
class SpendGroup:
    """Requests, tokens and settled cost of one combination of key values."""

    key: tuple[str | None, ...]  # in the order of the keys asked for; None: not recorded
    requests: int
    errors: int
    refused: int
    tokens_in: int
    tokens_out: int
    cost_usd: Decimal

    def as_dict(self, keys: Sequence[str]) -> dict[str, Any]:
        """Keys then figures; money as an exact decimal string (never a float)."""
        row: dict[str, Any] = dict(zip(keys, self.key, strict=True))
        row.update(
            requests=self.requests,
            errors=self.errors,
            refused=self.refused,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost_usd=str(self.cost_usd),
        )
        return row


def parse_keys(values: Iterable[str]) -> tuple[str, ...]:
    """``--by`` values (repeated or comma-separated) as keys, in order, each once."""
    keys: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().lower().replace("-", "_")
            if name == "serviceaccount":
                name = "service_account"
            if name not in GROUP_KEYS:
                raise ValueError(
                    f"cannot group by {part.strip()!r}: use one or more of " + ", ".join(GROUP_KEYS)
                )
            if name not in keys:
                keys.append(name)
    if not keys:
        raise ValueError("--by needs at least one of " + ", ".join(GROUP_KEYS))
    return tuple(keys)


def window(period: str, tz: tzinfo) -> tuple[datetime, datetime]:
    """``[start, end)`` of a Daily (``2026-12-05``), Weekly (``2026-W49``) or Monthly
    (``2026-12``) period key in ``tz``."""
    try:
        return period_bounds(period, tz)
    except ValueError:
        raise ValueError(
            f"period must be a day (YYYY-MM-DD), an ISO week (YYYY-Www) or a month "
            f"(YYYY-MM), got {period!r}"
        ) from None


async def spend_by(
    source: LedgerSource,
    keys: Sequence[str],
    *,
    month: str | None = None,
    between: tuple[datetime, datetime] | None = None,
) -> list[SpendGroup]:
    """Spend per combination of ``keys``, largest cost first (then by key values).

    ``month``: rows of that ledger month; ``between``: rows created in ``[start, end)``;
    neither: every row.
    """
    columns = [GROUP_KEYS[k] for k in keys]
    query = select(
        *columns,
        func.count(),
        func.sum(case((e.status == Status.ERROR.value, 1), else_=0)),
        func.sum(case((e.status == Status.REFUSED.value, 1), else_=0)),
        func.sum(e.tokens_in),
        func.sum(e.tokens_out),
        func.sum(e.cost_usd),
    ).group_by(*columns)
    if month is not None:
        query = query.where(e.period == check_period(month))
    if between is not None:
        query = query.where(e.created_at >= between[0], e.created_at < between[1])
    async with open_engine(source) as engine, engine.connect() as connection:
        result = list(await connection.execute(query))
    n = len(keys)
    groups = [
        SpendGroup(
            key=tuple(row[:n]),
            requests=int(row[n]),
            errors=int(row[n + 1] or 0),
            refused=int(row[n + 2] or 0),
            tokens_in=int(row[n + 3] or 0),
            tokens_out=int(row[n + 4] or 0),
            cost_usd=row[n + 5] if row[n + 5] is not None else ZERO,
        )
        for row in result
    ]
    groups.sort(key=lambda g: (-g.cost_usd, tuple((v is None, v or "") for v in g.key)))
    return groups


def write_groups(
    groups: Sequence[SpendGroup], keys: Sequence[str], fmt: GroupFormat, out: TextIO, scope: str
) -> None:
    """``groups`` as an aligned table (``text``), CSV (header first) or a JSON array."""
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*keys, *FIGURES])
        for group in groups:
            row = group.as_dict(keys)
            writer.writerow(["" if row[c] is None else row[c] for c in (*keys, *FIGURES)])
        return
    if fmt == "json":
        json.dump([g.as_dict(keys) for g in groups], out, ensure_ascii=False, indent=1)
        out.write("\n")
        return
    out.write(render(groups, keys, scope))


def render(groups: Sequence[SpendGroup], keys: Sequence[str], scope: str) -> str:
    """The text table of ``aegis ledger report --by``, with a total line."""
    lines = [f"Aegis ledger: spend by {', '.join(keys)} ({scope})", ""]
    if not groups:
        return "\n".join([*lines, "(no requests recorded)"]) + "\n"
    table = [
        [
            *("-" if v is None else v for v in g.key),
            f"{g.requests:,}",
            f"{g.errors:,}",
            f"{g.refused:,}",
            f"{g.tokens_in:,}",
            f"{g.tokens_out:,}",
            micros(g.cost_usd, grouped=True),
        ]
        for g in groups
    ]
    table.append(
        [
            "total",
            *([""] * (len(keys) - 1)),
            f"{sum(g.requests for g in groups):,}",
            f"{sum(g.errors for g in groups):,}",
            f"{sum(g.refused for g in groups):,}",
            f"{sum(g.tokens_in for g in groups):,}",
            f"{sum(g.tokens_out for g in groups):,}",
            micros(sum((g.cost_usd for g in groups), ZERO), grouped=True),
        ]
    )
    headers = [k.replace("_", " ").upper() for k in keys]
    headers += ["REQUESTS", "ERRORS", "REFUSED", "TOKENS IN", "TOKENS OUT", "COST USD"]
    right = set(range(len(keys), len(keys) + len(FIGURES)))
    return "\n".join([*lines, *text_table(headers, table, right=right)]) + "\n"
