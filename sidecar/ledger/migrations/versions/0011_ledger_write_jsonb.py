"""The ledger's write function parses its batch once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

PostgreSQL: ``aegis.ledger_write(holder, rows)`` (:mod:`..ledger_write_0011`) reads
the batch as ``jsonb`` (one parse) instead of extracting each of a row's values from
its ``json`` text (one parse per value): the same rows, checks and charges for about
a third of PostgreSQL's CPU per row. Its signature, its grants and the bound
``aegis.ledger_write(holder, rows, ledger)`` that calls it are unchanged.
SQLite (standalone: no ledger function) gets nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from aegis.sidecar.ledger.migrations.ledger_write_0009 import LEDGER_WRITE as LEDGER_WRITE_0009
from aegis.sidecar.ledger.migrations.ledger_write_0011 import LEDGER_WRITE

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(LEDGER_WRITE)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(LEDGER_WRITE_0009)
