"""The ledger's summary: totals per period, namespace, route, provider and model.

One row per key (``ledger_summary``, migration 0007), kept in the same transaction as
the inserts by a trigger on the ledger (PostgreSQL: one statement-level trigger per
batch; SQLite: per row), counting only rows really inserted (a replay adds nothing).
Reports and budget figures read it instead of scanning raw rows, and it keeps the
months whose raw rows retention exported and dropped.
"""

from __future__ import annotations

from decimal import Decimal
from typing import cast

from sqlalchemy import BigInteger, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base
from .types import Money

__all__ = ["SUMMARY", "LedgerSummary"]


class LedgerSummary(Base):
    """Requests, errors, refusals, tokens and cost of one (period, namespace, route,
    provider, model): ``period`` is the ledger row's (the month its money was reserved
    in)."""

    __tablename__ = "ledger_summary"

    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    route: Mapped[str] = mapped_column(String(253), primary_key=True)
    provider: Mapped[str] = mapped_column(String(63), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    refused: Mapped[int] = mapped_column(BigInteger)
    tokens_in: Mapped[int] = mapped_column(BigInteger)
    tokens_out: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[Decimal] = mapped_column(Money())


SUMMARY = cast(Table, LedgerSummary.__table__)
