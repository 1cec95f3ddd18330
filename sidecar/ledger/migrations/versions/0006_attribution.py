"""Attribution: the workload and ServiceAccount of each request, on its ledger row.

Revision ID: 0006
Revises: 0005
Create Date: 2026-05-01

Two nullable columns of ``ledger_entries`` (rows written before stay NULL):
``workload`` (the pod's owner as the injector resolved it at admission:
``Deployment/web``, ``StatefulSet/db``, ``DaemonSet/agent``, ``CronJob/nightly``,
``Job/once``, ``Pod/<name>``) and ``service_account`` (the pod's ServiceAccount).
PostgreSQL: ``aegis.ledger_write(holder, rows)`` is replaced by the text in
``ledger_write_0006.py``, which reads the two new elements of each row (a spooled row
from before the upgrade has none: they read as NULL); the three-argument form calls it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aegis.sidecar.ledger.migrations.ledger_write_0006 import WRITE, previous_write

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "aegis"
NEW_COLUMNS = (("workload", 320), ("service_account", 253))


def upgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None
    for name, length in NEW_COLUMNS:
        op.add_column("ledger_entries", sa.Column(name, sa.String(length)), schema=schema)
    if postgres:
        op.execute(WRITE)


def downgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    if postgres:
        op.execute(previous_write())
    with op.batch_alter_table("ledger_entries", schema=SCHEMA if postgres else None) as batch:
        for name, _ in reversed(NEW_COLUMNS):
            batch.drop_column(name)
