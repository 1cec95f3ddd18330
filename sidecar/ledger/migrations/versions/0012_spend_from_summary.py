"""Spend per provider and month is read from the summary: its index on the ledger goes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

``ix_ledger_entries_provider_period_cost_usd`` served one read, the settled spend per
provider and month, and cost every inserted row ~4 µs of PostgreSQL's CPU (a quarter
of the row's cost). ``ledger_summary`` (0007) holds the same sums per period and
provider, kept in the insert's transaction, and keeps them after retention drops a
month: the read moved there, and the index is dropped (on PostgreSQL from every
month's partition with it). Downgrade builds it again.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_ledger_entries_provider_period_cost_usd"


def _schema() -> str | None:
    return "aegis" if op.get_context().dialect.name == "postgresql" else None


def upgrade() -> None:
    op.drop_index(INDEX, table_name="ledger_entries", schema=_schema())


def downgrade() -> None:
    op.create_index(INDEX, "ledger_entries", ["provider", "period", "cost_usd"], schema=_schema())
