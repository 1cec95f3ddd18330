"""Budget periods: Daily, Weekly (ISO) and Monthly keys, each charge in its own period.

Revision ID: 0009
Revises: 0008
Create Date: 2026-05-01

- ``budget_periods.period`` and ``budget_leases.period`` widen from 7 to 10
  characters: a period key is now a day (``2026-12-05``), an ISO week (``2026-W49``)
  or a month (``2026-12``). Existing rows are months and stay as they are.
- PostgreSQL: ``aegis.ledger_write`` (:mod:`..ledger_write_0009`) settles each charge
  ``Scope/namespace/name@period`` into that budget's lease of that period; a charge
  without ``@`` (spooled before the upgrade) keeps using the row's period. A ledger
  row's own ``period`` stays the month (partitions and reports are by month).
SQLite (standalone: no leases) gets the wider columns only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aegis.sidecar.ledger.migrations.ledger_write_0009 import LEDGER_WRITE
from aegis.sidecar.ledger.migrations.partition_functions_0007 import (
    LEDGER_WRITE as LEDGER_WRITE_0007,
)

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "aegis"
TABLES = ("budget_periods", "budget_leases")


def _period_width(old: int, new: int) -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    if postgres:
        # Widening a varchar is a catalog change (no rewrite); the foreign key from the
        # leases to the periods is kept, both sides change in one statement each.
        for table in TABLES:
            op.alter_column(
                table,
                "period",
                type_=sa.String(new),
                existing_type=sa.String(old),
                existing_nullable=False,
                schema=SCHEMA,
            )
        return
    if op.get_context().as_sql:
        # An offline SQLite script cannot reflect the tables a batch copies; SQLite
        # enforces no VARCHAR length, so such a ledger keeps the old declared width.
        return
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "period",
                type_=sa.String(new),
                existing_type=sa.String(old),
                existing_nullable=False,
            )


def upgrade() -> None:
    _period_width(7, 10)
    if op.get_context().dialect.name == "postgresql":
        op.execute(LEDGER_WRITE)


def downgrade() -> None:
    """Back to month keys only: refused (value too long) while day keys exist."""
    if op.get_context().dialect.name == "postgresql":
        op.execute(LEDGER_WRITE_0007)
    _period_width(10, 7)
