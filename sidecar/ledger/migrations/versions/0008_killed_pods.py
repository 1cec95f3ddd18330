"""Killed pods: a dead sidecar's calls of unknown outcome stay charged.

Revision ID: 0008
Revises: 0007
Create Date: 2026-04-15

``budget_leases`` gains what a holder reports with each take and renewal and what a
reclaim keeps (rows before stay as they were: no exposure reported, no call time, no
unknown money):

- ``exposure_usd``: the most of the lease the holder may have committed (settled, in
  flight, answered and not yet written) until its next report; NULL: all of it;
- ``max_call_seconds``: the holder's per-request deadline (at most an hour): a lease
  not renewed is reclaimed only once its expiry plus this has passed;
- ``unknown_usd``: money kept charged for calls whose outcome the ledger never
  learnt (a life that ended without closing its lease), final;
- ``reclaimed_at``: set while the lease is closed by a reclaim and its holder has
  neither taken over nor come back: all it still holds is unknown-outcome money, which
  its late rows settle against.

PostgreSQL: ``aegis.lease_take`` gains a form with the spare money and the call time
(:mod:`..lease_functions_0008`), granted to every tenant and by
``aegis.ensure_tenant`` from now on; the 0003 form stays for sidecars of the previous
version (it reports nothing, so their whole lease stays charged when they die);
``aegis.lease_return`` never gives back unknown-outcome money and answers how much
there is (created again: its answer changed; granted to the tenants again);
``aegis.lease_takeover`` keeps the previous life's exposure charged.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

import sqlalchemy as sa
from alembic import op

from aegis.sidecar.ledger.migrations.lease_functions_0008 import (
    NEW_TENANT_FUNCTIONS,
    RECREATED_FUNCTIONS,
    REPLACED_FUNCTIONS,
)
from aegis.sidecar.ledger.migrations.tenant_functions_0003 import RETURN as RETURN_0003
from aegis.sidecar.ledger.migrations.tenant_functions_0003 import TAKE as TAKE_0003
from aegis.sidecar.ledger.migrations.tenant_functions_0003 import TAKEOVER as TAKEOVER_0003
from aegis.sidecar.ledger.migrations.tenant_functions_0003 import TENANT_FUNCTIONS

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "aegis"
MONEY = sa.Numeric(18, 6).with_variant(sa.BigInteger(), "sqlite")


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("exposure_usd", MONEY, nullable=True),
        sa.Column("max_call_seconds", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("unknown_usd", MONEY, nullable=False, server_default="0"),
        sa.Column("reclaimed_at", sa.DateTime(timezone=True), nullable=True),
    ]


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


def _identity() -> ModuleType:
    return importlib.import_module("aegis.sidecar.ledger.migrations.versions.0005_ledger_identity")


def tenant_grants() -> list[str]:
    """Every function a tenant may call from this revision on (later migrations that
    add one extend this list)."""
    identity = _identity()
    return [*TENANT_FUNCTIONS, *identity.NEW_FUNCTIONS, *NEW_TENANT_FUNCTIONS]


def _ensure_tenant(grants: Sequence[str]) -> str:
    source: str = _identity()._ensure_tenant(grants)
    return source


def upgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None
    for column in _columns():
        op.add_column("budget_leases", column, schema=schema)
    if not postgres:
        return
    for signature, sql in RECREATED_FUNCTIONS.items():
        op.execute(f"DROP FUNCTION {signature}")
        op.execute(sql)
    for sql in [*NEW_TENANT_FUNCTIONS.values(), *REPLACED_FUNCTIONS.values()]:
        op.execute(sql)
    signatures = ", ".join([*NEW_TENANT_FUNCTIONS, *RECREATED_FUNCTIONS])
    op.execute(f"REVOKE ALL ON FUNCTION {signatures} FROM PUBLIC")
    op.execute(GRANT_TENANTS.replace("{grants}", signatures))
    op.execute(_ensure_tenant(tenant_grants()))


def downgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    if postgres:
        previous = [g for g in tenant_grants() if g not in NEW_TENANT_FUNCTIONS]
        op.execute(_ensure_tenant(previous))
        for sql in (TAKE_0003, TAKEOVER_0003):
            op.execute(sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
        for signature in NEW_TENANT_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {signature}")
        for signature in RECREATED_FUNCTIONS:
            op.execute(f"DROP FUNCTION {signature}")
        op.execute(RETURN_0003)
        recreated = ", ".join(RECREATED_FUNCTIONS)
        op.execute(f"REVOKE ALL ON FUNCTION {recreated} FROM PUBLIC")
        op.execute(GRANT_TENANTS.replace("{grants}", recreated))
    with op.batch_alter_table("budget_leases", schema=SCHEMA if postgres else None) as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
