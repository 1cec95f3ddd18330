"""Ledger identity: the id a spool is bound to.

Revision ID: 0005
Revises: 0004
Create Date: 2026-04-01

``ledger_identity`` holds one row, written here: a random ``ledger_id`` that is this
ledger's own (a new, empty database migrated later gets another one). A sidecar
reads it with the database's identity (PostgreSQL: the cluster's system identifier
and the database's oid) before it writes anything, binds its spool to the pair, and
replays spooled rows only into the ledger they were written for.

PostgreSQL: tenants read the pair through ``aegis.ledger_identity()`` and write
through ``aegis.ledger_write(holder, rows, ledger_id)``, which refuses a batch bound
to another ledger (SQLSTATE ``55000``) before inserting or charging anything; the
two-argument ``aegis.ledger_write`` stays for sidecars of the previous version.
Both are granted to every tenant role, and ``aegis.ensure_tenant`` is replaced by
one that grants them to new tenants too.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from aegis.sidecar.ledger.migrations.control_functions_0003 import ensure_tenant
from aegis.sidecar.ledger.migrations.tenant_functions_0003 import HEADER, TENANT_FUNCTIONS

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "aegis"
MISMATCH = "55000"  # object_not_in_prerequisite_state

IDENTITY = f"""
CREATE FUNCTION aegis.ledger_identity()
RETURNS TABLE (ledger_id text, database text)
STABLE {HEADER} AS $fn$
#variable_conflict use_column
BEGIN
    SELECT i.ledger_id::text INTO ledger_id FROM aegis.ledger_identity i LIMIT 1;
    SELECT c.system_identifier::text || '/' || d.oid::text INTO database
        FROM pg_catalog.pg_control_system() c, pg_catalog.pg_database d
        WHERE d.datname = pg_catalog.current_database();
    RETURN NEXT;
END
$fn$
"""

BOUND_WRITE = f"""
CREATE FUNCTION aegis.ledger_write(p_holder text, p_rows json, p_ledger text)
RETURNS integer
{HEADER} AS $fn$
BEGIN
    IF p_ledger IS DISTINCT FROM (SELECT i.ledger_id::text FROM aegis.ledger_identity i) THEN
        RAISE EXCEPTION 'these ledger rows were written for ledger %, not this one', p_ledger
            USING ERRCODE = '{MISMATCH}';
    END IF;
    RETURN aegis.ledger_write(p_holder, p_rows);
END
$fn$
"""

NEW_FUNCTIONS = {
    "aegis.ledger_identity()": IDENTITY,
    "aegis.ledger_write(text, json, text)": BOUND_WRITE,
}

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


def _ensure_tenant(grants: Sequence[str]) -> str:
    """``aegis.ensure_tenant`` of 0003 granting ``grants`` (run through 0003's block,
    which substitutes the version table's qualified name)."""
    previous = importlib.import_module("aegis.sidecar.ledger.migrations.versions.0003_tenancy")
    old = ", ".join(TENANT_FUNCTIONS)
    source = ensure_tenant("@VERSION_TABLE@")
    if source.count(old) != 1:
        raise RuntimeError("aegis.ensure_tenant of 0003 is not shaped as expected")
    source = source.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    source = source.replace(old, ", ".join(grants))
    return str(previous.ENSURE_TENANT).replace("{source}", source)


def upgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None
    table = op.create_table(
        "ledger_identity",
        sa.Column("ledger_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ledger_id", name=op.f("pk_ledger_identity")),
        schema=schema,
    )
    op.bulk_insert(table, [{"ledger_id": str(uuid.uuid4()), "created_at": datetime.now(UTC)}])
    if not postgres:
        return
    for sql in NEW_FUNCTIONS.values():
        op.execute(sql)
    signatures = ", ".join(NEW_FUNCTIONS)
    op.execute(f"REVOKE ALL ON FUNCTION {signatures} FROM PUBLIC")
    op.execute(GRANT_TENANTS.replace("{grants}", signatures))
    op.execute(_ensure_tenant([*TENANT_FUNCTIONS, *NEW_FUNCTIONS]))


def downgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    if postgres:
        op.execute(_ensure_tenant(list(TENANT_FUNCTIONS)))
        for signature in NEW_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.drop_table("ledger_identity", schema=SCHEMA if postgres else None)
