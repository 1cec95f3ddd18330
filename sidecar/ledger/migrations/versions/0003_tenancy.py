"""Tenancy: budgets keyed by (scope, namespace, name), one database role per namespace.

Revision ID: 0003
Revises: 0002
Create Date: 2026-03-01

- Budget identity: ``budget_limits``, ``budget_periods`` and ``budget_leases`` are
  keyed by ``(budget_scope, budget_namespace, budget_name)`` (``Namespace``/``Cluster``;
  ``''`` is the namespace of a cluster budget). Existing rows keep their money and
  history under ``(Namespace, '', <name>)``: the namespace of a budget keyed by name
  alone is not known here; the operator's first ``aegis.set_budget`` of that name
  adopts them (see ``control_functions_0003``).
- ``budget_limits`` gains the provider; ``budget_spenders`` says which namespaces may
  spend a budget (``*``: all); ``tenants`` maps each tenant login role to its
  namespace. The operator writes all three, through the control functions.
- PostgreSQL: the four tables move to schema ``aegis``, which only the owner may
  create objects in; the 0002 functions are dropped (they trusted their caller's
  limit, budget and holder) and replaced by the functions of
  ``tenant_functions_0003`` and ``control_functions_0003``; ``EXECUTE`` on them and
  ``CREATE`` on ``public`` are revoked from ``PUBLIC``.
SQLite (standalone: one process, no tenants) gets the same tables, empty.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aegis.sidecar.ledger.migrations.control_functions_0003 import (
    STATIC_FUNCTIONS,
    ensure_tenant,
)
from aegis.sidecar.ledger.migrations.tenant_functions_0003 import (
    INTERNAL_FUNCTIONS,
    TENANT_FUNCTIONS,
)

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "aegis"
MONEY = sa.Numeric(18, 6).with_variant(sa.BigInteger(), "sqlite")
INSTANT = sa.DateTime(timezone=True)
BUDGET_TABLES = ("budget_limits", "budget_periods", "budget_leases")
MOVED = ("ledger_entries", *BUDGET_TABLES)
KEY = ("budget_scope", "budget_namespace", "budget_name")
SCOPE_CHECK = (
    "budget_scope IN ('Namespace', 'Cluster') "
    "AND (budget_scope = 'Namespace' OR budget_namespace = '')"
)
OLD_FUNCTIONS = (
    "aegis_lease_take(text, text, text, text, numeric, numeric, numeric, integer)",
    "aegis_lease_return(text, text, text, numeric, boolean)",
    "aegis_lease_takeover(text)",
    "aegis_lease_settle(text, text, text, numeric)",
    "aegis_ledger_write(text, json)",
)
PRIMARY_KEYS = {
    "budget_limits": KEY,
    "budget_periods": (*KEY, "period"),
    "budget_leases": (*KEY, "period", "holder"),
}

OWN_SCHEMA = f"""
DO $do$
BEGIN
    IF (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = '{SCHEMA}')
       <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'schema {SCHEMA} exists and is not owned by %: the ledger owner must '
            'own it (DROP it or ALTER SCHEMA {SCHEMA} OWNER TO %)', current_user, current_user;
    END IF;
END
$do$
"""

# The qualified name of Alembic's version table, substituted into ensure_tenant when
# the statement runs (so offline SQL works too).
ENSURE_TENANT = """
DO $do$
DECLARE
    v_table text;
BEGIN
    SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) INTO v_table
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = pg_catalog.to_regclass('aegis_ledger_version');
    EXECUTE pg_catalog.replace($src${source}$src$, '@VERSION_TABLE@', v_table);
END
$do$
"""

PUBLIC_SCHEMA_CHECK = """
DO $do$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
        WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE') THEN
        RAISE WARNING 'PUBLIC may still create objects in schema public (the owner of '
            'schema public must run: REVOKE CREATE ON SCHEMA public FROM PUBLIC)';
    END IF;
END
$do$
"""


def _key_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("budget_scope", sa.String(9), nullable=False),
        sa.Column("budget_namespace", sa.String(63), nullable=False),
        sa.Column("budget_name", sa.String(63), nullable=False),
    ]


def _scope_check(table: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(SCOPE_CHECK, name=op.f(f"ck_{table}_budget_scope"))


def _new_tables(schema: str | None) -> None:
    op.create_table(
        "tenants",
        sa.Column("role_name", sa.String(63), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.PrimaryKeyConstraint("role_name", name=op.f("pk_tenants")),
        sa.UniqueConstraint("namespace", name=op.f("uq_tenants_namespace")),
        schema=schema,
    )
    prefix = f"{schema}." if schema else ""
    op.create_table(
        "budget_spenders",
        *_key_columns(),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.PrimaryKeyConstraint(*KEY, "namespace", name=op.f("pk_budget_spenders")),
        sa.ForeignKeyConstraint(
            list(KEY),
            [f"{prefix}budget_limits.{c}" for c in KEY],
            name="fk_budget_spenders_budget_limits",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        schema=schema,
    )


def _sqlite_budget_tables() -> None:
    """SQLite never used the budget tables (no leases standalone): rebuild them."""
    op.drop_index(op.f("ix_budget_leases_holder"), table_name="budget_leases")
    for table in reversed(BUDGET_TABLES):
        op.drop_table(table)
    op.create_table(
        "budget_limits",
        *_key_columns(),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("limit_usd", MONEY, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.PrimaryKeyConstraint(*KEY, name=op.f("pk_budget_limits")),
        sa.CheckConstraint("limit_usd >= 0", name=op.f("ck_budget_limits_limit_nonnegative")),
        _scope_check("budget_limits"),
    )
    op.create_table(
        "budget_periods",
        *_key_columns(),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("limit_usd", MONEY, nullable=False),
        sa.Column("committed_usd", MONEY, nullable=False),
        sa.Column("overdraft_usd", MONEY, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.PrimaryKeyConstraint(*KEY, "period", name=op.f("pk_budget_periods")),
        sa.CheckConstraint(
            "committed_usd >= 0 AND overdraft_usd >= 0 AND limit_usd >= 0",
            name=op.f("ck_budget_periods_money_nonnegative"),
        ),
        _scope_check("budget_periods"),
    )
    op.create_table(
        "budget_leases",
        *_key_columns(),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("holder", sa.String(320), nullable=False),
        sa.Column("amount_usd", MONEY, nullable=False),
        sa.Column("settled_usd", MONEY, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("renewed_at", INSTANT, nullable=False),
        sa.Column("expires_at", INSTANT, nullable=False),
        sa.PrimaryKeyConstraint(*KEY, "period", "holder", name=op.f("pk_budget_leases")),
        sa.ForeignKeyConstraint(
            [*KEY, "period"],
            [f"budget_periods.{c}" for c in (*KEY, "period")],
            name="fk_budget_leases_budget_periods",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.CheckConstraint("state IN ('open', 'closed')", name=op.f("ck_budget_leases_state")),
        sa.CheckConstraint(
            "settled_usd >= 0 AND settled_usd <= amount_usd",
            name=op.f("ck_budget_leases_settled_within_amount"),
        ),
        _scope_check("budget_leases"),
    )
    op.create_index(op.f("ix_budget_leases_holder"), "budget_leases", ["holder"])


def _postgres_budget_keys() -> None:
    """Re-key the budget tables in place: every row and its money stays."""
    op.drop_constraint(
        "fk_budget_leases_budget_period_budget_periods", "budget_leases", schema=SCHEMA
    )
    for table in BUDGET_TABLES:
        op.drop_constraint(f"pk_{table}", table, schema=SCHEMA)
        op.alter_column(table, "budget", new_column_name="budget_name", schema=SCHEMA)
        op.add_column(
            table,
            sa.Column("budget_scope", sa.String(9), nullable=False, server_default="Namespace"),
            schema=SCHEMA,
        )
        op.add_column(
            table,
            sa.Column("budget_namespace", sa.String(63), nullable=False, server_default=""),
            schema=SCHEMA,
        )
        op.alter_column(table, "budget_scope", server_default=None, schema=SCHEMA)
        op.alter_column(table, "budget_namespace", server_default=None, schema=SCHEMA)
        op.create_check_constraint(
            op.f(f"ck_{table}_budget_scope"), table, SCOPE_CHECK, schema=SCHEMA
        )
        op.create_primary_key(f"pk_{table}", table, list(PRIMARY_KEYS[table]), schema=SCHEMA)
    op.add_column(
        "budget_limits",
        sa.Column("provider", sa.String(63), nullable=False, server_default=""),
        schema=SCHEMA,
    )
    op.alter_column("budget_limits", "provider", server_default=None, schema=SCHEMA)
    op.create_foreign_key(
        "fk_budget_leases_budget_periods",
        "budget_leases",
        "budget_periods",
        [*KEY, "period"],
        [*KEY, "period"],
        source_schema=SCHEMA,
        referent_schema=SCHEMA,
        ondelete="CASCADE",
        onupdate="CASCADE",
    )


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        _sqlite_budget_tables()
        _new_tables(None)
        return
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.execute(OWN_SCHEMA)
    for signature in OLD_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    for table in MOVED:
        op.execute(f"ALTER TABLE {table} SET SCHEMA {SCHEMA}")
    _postgres_budget_keys()
    _new_tables(SCHEMA)
    for sql in (*INTERNAL_FUNCTIONS.values(), *TENANT_FUNCTIONS.values()):
        op.execute(sql)
    for sql in STATIC_FUNCTIONS.values():
        op.execute(sql)
    op.execute(ENSURE_TENANT.replace("{source}", ensure_tenant("@VERSION_TABLE@")))
    op.execute(f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {SCHEMA} FROM PUBLIC")
    op.execute(f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC"
    )
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    op.execute(PUBLIC_SCHEMA_CHECK)


def _postgres_downgrade() -> None:
    """Back to 0002: keys by name again (refused if two namespaces now share a name in
    one period), the tables back beside the version table, the 0002 functions."""
    functions = (*TENANT_FUNCTIONS, *INTERNAL_FUNCTIONS, *STATIC_FUNCTIONS)
    for signature in (*functions, "aegis.ensure_tenant(text, text)"):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.drop_table("budget_spenders", schema=SCHEMA)
    op.drop_table("tenants", schema=SCHEMA)
    op.drop_constraint("fk_budget_leases_budget_periods", "budget_leases", schema=SCHEMA)
    for table in BUDGET_TABLES:
        op.drop_constraint(f"pk_{table}", table, schema=SCHEMA)
        op.drop_constraint(op.f(f"ck_{table}_budget_scope"), table, schema=SCHEMA)
        op.drop_column(table, "budget_scope", schema=SCHEMA)
        op.drop_column(table, "budget_namespace", schema=SCHEMA)
        op.alter_column(table, "budget_name", new_column_name="budget", schema=SCHEMA)
        columns = ["budget", *PRIMARY_KEYS[table][3:]]
        op.create_primary_key(f"pk_{table}", table, columns, schema=SCHEMA)
    op.drop_column("budget_limits", "provider", schema=SCHEMA)
    op.create_foreign_key(
        "fk_budget_leases_budget_period_budget_periods",
        "budget_leases",
        "budget_periods",
        ["budget", "period"],
        ["budget", "period"],
        source_schema=SCHEMA,
        referent_schema=SCHEMA,
        ondelete="CASCADE",
    )
    op.execute(
        f"""
DO $do$
DECLARE
    v_schema text;
    v_table text;
BEGIN
    SELECT n.nspname INTO v_schema FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = pg_catalog.to_regclass('aegis_ledger_version');
    FOREACH v_table IN ARRAY ARRAY['{"', '".join(MOVED)}'] LOOP
        EXECUTE format('ALTER TABLE {SCHEMA}.%I SET SCHEMA %I', v_table, v_schema);
    END LOOP;
END
$do$
"""
    )
    op.execute(f"DROP SCHEMA {SCHEMA}")
    previous = importlib.import_module(
        "aegis.sidecar.ledger.migrations.versions.0002_budget_leases"
    )
    for sql in previous.FUNCTIONS.values():
        op.execute(sql)
    names = ", ".join(f"'{signature}'" for signature in previous.FUNCTIONS)
    op.execute(previous.PIN_SEARCH_PATH.replace("{names}", names))


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _postgres_downgrade()
        return
    op.drop_table("budget_spenders")
    op.drop_table("tenants")
    op.drop_index(op.f("ix_budget_leases_holder"), table_name="budget_leases")
    for table in reversed(BUDGET_TABLES):
        op.drop_table(table)
    previous = importlib.import_module(
        "aegis.sidecar.ledger.migrations.versions.0002_budget_leases"
    )
    previous.upgrade()
