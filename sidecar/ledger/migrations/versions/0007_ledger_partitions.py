"""Ledger partitions: ``ledger_entries`` by month, a summary table, partitions ahead.

Revision ID: 0007
Revises: 0006
Create Date: 2026-05-15

PostgreSQL: ``aegis.ledger_entries`` becomes a table partitioned by range of
``created_at``, one partition per calendar month in UTC plus a default partition (see
``partition_functions_0007``). Existing rows are copied into their months' partitions
(nothing is lost; the copy takes the time of a bulk insert, under a lock that holds
writers back: they retry, their spools keep the rows); its check constraints, the
other indexes, and the grants on the table are carried over; the primary key becomes
``(request_id, created_at)`` and ``aegis.ledger_write`` conflicts on it. The current
month and the three after it get partitions now; ``aegis.ensure_partitions`` creates
later ones (the migration job at every run, the operator on a timer) and is granted
to the roles that may call ``aegis.set_budget`` (the operator's control role).

Both backends: ``ledger_summary`` (totals per period, namespace, route, provider and
model), filled from the rows already there and kept by a trigger on the ledger;
granted to the roles that may read the ledger.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aegis.sidecar.ledger.migrations.partition_functions_0007 import (
    ENSURE_PARTITIONS_AHEAD,
    FUNCTIONS,
    LEDGER_WRITE,
    SQLITE_SUMMARY_TRIGGER,
    SUMMARY_BACKFILL,
    SUMMARY_TRIGGER,
)

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "aegis"
MONEY = sa.Numeric(18, 6).with_variant(sa.BigInteger(), "sqlite")
PREVIOUS_WRITE = "aegis.sidecar.ledger.migrations.ledger_write_0006"


def _rebuild(partitioned: bool) -> str:
    """The ledger table rebuilt (partitioned by month, or plain again) with every row,
    its check constraints, its other indexes and its grants; primary key included."""
    if partitioned:
        shape, key = " PARTITION BY RANGE (created_at)", "request_id, created_at"
        parts = """
    CREATE TABLE aegis.ledger_entries_default PARTITION OF aegis.ledger_entries DEFAULT;
    FOR v_month IN
        SELECT DISTINCT pg_catalog.date_trunc('month', o.created_at AT TIME ZONE 'UTC')::date
        FROM aegis.ledger_entries_old o LOOP
        PERFORM aegis.ledger_partition(v_month);
    END LOOP;"""
    else:
        shape, key, parts = "", "request_id", ""
    return f"""
DO $do$
DECLARE
    v_indexes text[];
    v_index text;
    v_acl aclitem[];
    v_owner oid;
    v_month date;
    v_grant record;
BEGIN
    SELECT pg_catalog.array_agg(pg_catalog.pg_get_indexdef(i.indexrelid) ORDER BY i.indexrelid)
        INTO v_indexes FROM pg_catalog.pg_index i
        WHERE i.indrelid = 'aegis.ledger_entries'::regclass AND NOT i.indisprimary;
    SELECT c.relacl, c.relowner INTO v_acl, v_owner FROM pg_catalog.pg_class c
        WHERE c.oid = 'aegis.ledger_entries'::regclass;
    ALTER TABLE aegis.ledger_entries RENAME TO ledger_entries_old;
    ALTER TABLE aegis.ledger_entries_old
        RENAME CONSTRAINT pk_ledger_entries TO pk_ledger_entries_old;
    CREATE TABLE aegis.ledger_entries (LIKE aegis.ledger_entries_old INCLUDING DEFAULTS
        INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS){shape};{parts}
    INSERT INTO aegis.ledger_entries SELECT * FROM aegis.ledger_entries_old;
    DROP TABLE aegis.ledger_entries_old;
    ALTER TABLE aegis.ledger_entries ADD CONSTRAINT pk_ledger_entries PRIMARY KEY ({key});
    FOREACH v_index IN ARRAY COALESCE(v_indexes, ARRAY[]::text[]) LOOP
        EXECUTE pg_catalog.replace(v_index, ' ON ONLY aegis.', ' ON aegis.');
    END LOOP;
    FOR v_grant IN SELECT a.grantee, a.privilege_type, a.is_grantable
                   FROM pg_catalog.aclexplode(v_acl) a WHERE a.grantee <> v_owner LOOP
        EXECUTE pg_catalog.format('GRANT %s ON aegis.ledger_entries TO %s%s',
            v_grant.privilege_type,
            CASE WHEN v_grant.grantee = 0 THEN 'PUBLIC'
                 ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(v_grant.grantee)) END,
            CASE WHEN v_grant.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$do$
"""


# The roles that read the ledger read its summary; the control roles create partitions.
GRANT_ALONG = """
DO $do$
DECLARE
    v_role text;
BEGIN
    FOR v_role IN SELECT r.rolname FROM pg_catalog.pg_roles r
                  WHERE r.oid <> (SELECT c.relowner FROM pg_catalog.pg_class c
                                  WHERE c.oid = 'aegis.ledger_entries'::regclass)
                    AND pg_catalog.has_table_privilege(r.oid, 'aegis.ledger_entries', 'SELECT')
                    AND NOT r.rolsuper LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON aegis.ledger_summary TO %I', v_role);
    END LOOP;
    FOR v_role IN SELECT r.rolname FROM pg_catalog.pg_roles r
                  WHERE r.oid <> (SELECT p.proowner FROM pg_catalog.pg_proc p
                                  WHERE p.oid = '{set_budget}'::regprocedure)
                    AND pg_catalog.has_function_privilege(r.oid, '{set_budget}', 'EXECUTE')
                    AND NOT r.rolsuper LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION {ensure} TO %I', v_role);
    END LOOP;
END
$do$
""".replace("{set_budget}", "aegis.set_budget(text, text, text, text, numeric, text[])").replace(
    "{ensure}", "aegis.ensure_partitions(integer, timestamp with time zone)"
)


def _summary_table(schema: str | None) -> None:
    op.create_table(
        "ledger_summary",
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("route", sa.String(253), nullable=False),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.BigInteger(), nullable=False),
        sa.Column("tokens_in", sa.BigInteger(), nullable=False),
        sa.Column("tokens_out", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.PrimaryKeyConstraint(
            "period", "namespace", "route", "provider", "model", name=op.f("pk_ledger_summary")
        ),
        schema=schema,
    )


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        _summary_table(None)
        op.execute(SUMMARY_BACKFILL.format(table="ledger_summary", source="ledger_entries"))
        op.execute(SQLITE_SUMMARY_TRIGGER)
        return
    _summary_table(SCHEMA)
    for sql in FUNCTIONS.values():
        op.execute(sql)
    op.execute(f"REVOKE ALL ON FUNCTION {', '.join(FUNCTIONS)} FROM PUBLIC")
    op.execute(_rebuild(partitioned=True))
    op.execute(SUMMARY_BACKFILL.format(table="aegis.ledger_summary", source="aegis.ledger_entries"))
    op.execute(SUMMARY_TRIGGER)
    op.execute(LEDGER_WRITE)
    op.execute(GRANT_ALONG)
    op.execute(ENSURE_PARTITIONS_AHEAD)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_summary_add")
        op.drop_table("ledger_summary")
        return
    op.execute(importlib.import_module(PREVIOUS_WRITE).WRITE)
    op.execute(_rebuild(partitioned=False))  # the trigger goes with the partitioned table
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")
    op.drop_table("ledger_summary", schema=SCHEMA)
