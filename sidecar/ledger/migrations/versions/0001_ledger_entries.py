"""The ledger: one row per request.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Types are spelled out here rather than imported from the models, so that this
revision keeps meaning the same thing when the models evolve. Money is
NUMERIC(18, 6) on PostgreSQL and INTEGER micro-dollars on SQLite (see
``aegis.sidecar.ledger.types``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(18, 6).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("pod", sa.String(253), nullable=False),
        sa.Column("route", sa.String(253), nullable=False),
        sa.Column("rule", sa.String(63), nullable=True),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("data_class", sa.String(32), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("ttft_ms", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.SmallInteger(), nullable=False),
        sa.Column("fallback_reason", sa.String(64), nullable=True),
        sa.Column("attempts", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_ledger_entries")),
        sa.CheckConstraint("arm IN ('stable', 'candidate')", name=op.f("ck_ledger_entries_arm")),
        sa.CheckConstraint(
            "status IN ('ok', 'error', 'refused', 'cancelled')",
            name=op.f("ck_ledger_entries_status"),
        ),
        sa.CheckConstraint("cost_usd >= 0", name=op.f("ck_ledger_entries_cost_nonnegative")),
        sa.CheckConstraint(
            "tokens_in >= 0 AND tokens_out >= 0", name=op.f("ck_ledger_entries_tokens_nonnegative")
        ),
    )
    op.create_index(
        op.f("ix_ledger_entries_provider_period_cost_usd"),
        "ledger_entries",
        ["provider", "period", "cost_usd"],
    )
    op.create_index(
        op.f("ix_ledger_entries_route_arm_created_at"),
        "ledger_entries",
        ["route", "arm", "created_at"],
    )
    op.create_index(
        op.f("ix_ledger_entries_period_created_at"),
        "ledger_entries",
        ["period", "created_at"],
    )


def downgrade() -> None:
    op.drop_table("ledger_entries")
