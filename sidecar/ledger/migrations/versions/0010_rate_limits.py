"""Rate limits: requests and tokens per minute shared by every sidecar of a scope.

Revision ID: 0010
Revises: 0009
Create Date: 2026-04-20

- ``rate_limits`` (kind, namespace, name): a budget's limits per minute, written by
  the operator (``aegis.set_rate_limits``); a route's come from its sidecars' config.
- ``rate_pools`` (kind, namespace, name, unit): the limit as last taken and
  ``committed`` = the sum of the holders' slots.
- ``rate_leases`` (pool, holder): the slots one sidecar holds, what it wanted, the
  sequence number of its last applied statement, its expiry.

PostgreSQL: ``aegis.rate_lease`` (granted to every tenant, and by
``aegis.ensure_tenant`` from now on) and ``aegis.set_rate_limits`` (for the control
role: ``aegis ledger migrate --grant-control``), from :mod:`..rate_functions`.
SQLite (standalone: one process, the limits are local) gets nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

import sqlalchemy as sa
from alembic import op

from aegis.sidecar.ledger.migrations.rate_functions import CONTROL_FUNCTIONS, TENANT_FUNCTIONS

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "aegis"
COUNT = sa.BigInteger()
INSTANT = sa.DateTime(timezone=True)
POOL = ("kind", "namespace", "name", "unit")

GRANT_TENANTS = """
DO $do$
DECLARE
    v_role text;
BEGIN
    FOR v_role IN SELECT t.role_name FROM aegis.tenants t
                  JOIN pg_catalog.pg_roles r ON r.rolname = t.role_name LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION {grants} TO %I', v_role);
    END LOOP;
END
$do$
"""


def _previous() -> ModuleType:
    return importlib.import_module("aegis.sidecar.ledger.migrations.versions.0008_killed_pods")


def tenant_grants() -> list[str]:
    """Every function a tenant may call from this revision on (later migrations that
    add one extend this list)."""
    return [*_previous().tenant_grants(), *TENANT_FUNCTIONS]


def _key() -> list[sa.Column[str]]:
    return [
        sa.Column("kind", sa.String(6), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
    ]


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return  # standalone: one process, its limits are local
    schema = SCHEMA
    op.create_table(
        "rate_limits",
        *_key(),
        sa.Column("requests_per_minute", COUNT, nullable=True),
        sa.Column("tokens_per_minute", COUNT, nullable=True),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.PrimaryKeyConstraint("kind", "namespace", "name", name=op.f("pk_rate_limits")),
        sa.CheckConstraint("kind = 'Budget'", name=op.f("ck_rate_limits_kind")),
        schema=schema,
    )
    op.create_table(
        "rate_pools",
        *_key(),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("limit_value", COUNT, nullable=False),
        sa.Column("committed", COUNT, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.PrimaryKeyConstraint(*POOL, name=op.f("pk_rate_pools")),
        sa.CheckConstraint(
            "kind IN ('Route', 'Budget') AND unit IN ('requests', 'tokens') AND committed >= 0",
            name=op.f("ck_rate_pools_valid"),
        ),
        schema=schema,
    )
    op.create_table(
        "rate_leases",
        *_key(),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("holder", sa.String(320), nullable=False),
        sa.Column("amount", COUNT, nullable=False),
        sa.Column("wanted", COUNT, nullable=False),
        sa.Column("seq", COUNT, nullable=False),
        sa.Column("renewed_at", INSTANT, nullable=False),
        sa.Column("expires_at", INSTANT, nullable=False),
        sa.PrimaryKeyConstraint(*POOL, "holder", name=op.f("pk_rate_leases")),
        sa.ForeignKeyConstraint(
            list(POOL),
            [f"{schema}.rate_pools.{c}" for c in POOL],
            name=op.f("fk_rate_leases_pool"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_rate_leases_amount")),
        schema=schema,
    )
    for sql in [*TENANT_FUNCTIONS.values(), *CONTROL_FUNCTIONS.values()]:
        op.execute(sql)
    signatures = ", ".join([*TENANT_FUNCTIONS, *CONTROL_FUNCTIONS])
    op.execute(f"REVOKE ALL ON FUNCTION {signatures} FROM PUBLIC")
    op.execute(GRANT_TENANTS.replace("{grants}", ", ".join(TENANT_FUNCTIONS)))
    op.execute(_previous()._ensure_tenant(tenant_grants()))


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(_previous()._ensure_tenant(_previous().tenant_grants()))
    for signature in [*TENANT_FUNCTIONS, *CONTROL_FUNCTIONS]:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    for table in ("rate_leases", "rate_pools", "rate_limits"):
        op.drop_table(table, schema=SCHEMA)
