# ruff: noqa: E501  (the statements are kept byte for byte as SQLite stores them)
"""The SQLite ledger's schema at :data:`REVISION`, as the migration chain leaves an
empty database.

Every new pod with a SQLite ledger starts from an empty file; running the Alembic
chain for it costs Alembic's import (with Mako) and a batch rebuild per migration,
about a fifth of a second and 8 MB for the life of the process. So an empty
SQLite database is given these statements instead, in one transaction, and stamped
at :data:`REVISION` (:func:`aegis.sidecar.ledger.migrate.upgrade` decides); a
database that is not empty, or a head newer than :data:`REVISION`, still goes
through Alembic. A test runs the chain on an empty database and compares its
``sqlite_master`` and rows with what these statements give: after a migration that
changes the SQLite schema, paste the statements it prints and raise ``REVISION``.
"""

from __future__ import annotations

REVISION = "0012"

# As SQLite keeps them (it stores each text as given), in the chain's order.
VERSION_TABLE_DDL = (
    "CREATE TABLE aegis_ledger_version (\n"
    "\tversion_num VARCHAR(32) NOT NULL, \n"
    "\tCONSTRAINT aegis_ledger_version_pkc PRIMARY KEY (version_num)\n"
    ")"
)

STATEMENTS: tuple[str, ...] = (
    (
        "CREATE TABLE ledger_entries (\n"
        "\trequest_id VARCHAR(128) NOT NULL, \n"
        "\tcreated_at DATETIME NOT NULL, \n"
        "\tperiod VARCHAR(7) NOT NULL, \n"
        "\tnamespace VARCHAR(63) NOT NULL, \n"
        "\tpod VARCHAR(253) NOT NULL, \n"
        "\troute VARCHAR(253) NOT NULL, \n"
        "\trule VARCHAR(63), \n"
        "\tarm VARCHAR(16) NOT NULL, \n"
        "\tprovider VARCHAR(63) NOT NULL, \n"
        "\tmodel VARCHAR(128) NOT NULL, \n"
        "\tdata_class VARCHAR(32) NOT NULL, \n"
        "\ttokens_in INTEGER NOT NULL, \n"
        "\ttokens_out INTEGER NOT NULL, \n"
        "\tcost_usd BIGINT NOT NULL, \n"
        "\tlatency_ms INTEGER NOT NULL, \n"
        "\tttft_ms INTEGER, \n"
        "\tstatus VARCHAR(16) NOT NULL, \n"
        "\thttp_status SMALLINT NOT NULL, \n"
        "\tfallback_reason VARCHAR(64), \n"
        "\tattempts SMALLINT NOT NULL, declared_class VARCHAR(32), pii_detectors VARCHAR(255), privacy_action VARCHAR(16), workload VARCHAR(320), service_account VARCHAR(253), \n"
        "\tCONSTRAINT pk_ledger_entries PRIMARY KEY (request_id), \n"
        "\tCONSTRAINT ck_ledger_entries_arm CHECK (arm IN ('stable', 'candidate')), \n"
        "\tCONSTRAINT ck_ledger_entries_status CHECK (status IN ('ok', 'error', 'refused', 'cancelled')), \n"
        "\tCONSTRAINT ck_ledger_entries_cost_nonnegative CHECK (cost_usd >= 0), \n"
        "\tCONSTRAINT ck_ledger_entries_tokens_nonnegative CHECK (tokens_in >= 0 AND tokens_out >= 0)\n"
        ")"
    ),
    "CREATE INDEX ix_ledger_entries_route_arm_created_at ON ledger_entries (route, arm, created_at)",
    "CREATE INDEX ix_ledger_entries_period_created_at ON ledger_entries (period, created_at)",
    (
        "CREATE TABLE budget_limits (\n"
        "\tbudget_scope VARCHAR(9) NOT NULL, \n"
        "\tbudget_namespace VARCHAR(63) NOT NULL, \n"
        "\tbudget_name VARCHAR(63) NOT NULL, \n"
        "\tprovider VARCHAR(63) NOT NULL, \n"
        "\tlimit_usd BIGINT NOT NULL, \n"
        "\tupdated_at DATETIME NOT NULL, \n"
        "\tCONSTRAINT pk_budget_limits PRIMARY KEY (budget_scope, budget_namespace, budget_name), \n"
        "\tCONSTRAINT ck_budget_limits_limit_nonnegative CHECK (limit_usd >= 0), \n"
        "\tCONSTRAINT ck_budget_limits_budget_scope CHECK (budget_scope IN ('Namespace', 'Cluster') AND (budget_scope = 'Namespace' OR budget_namespace = ''))\n"
        ")"
    ),
    (
        "CREATE TABLE tenants (\n"
        "\trole_name VARCHAR(63) NOT NULL, \n"
        "\tnamespace VARCHAR(63) NOT NULL, \n"
        "\tactive BOOLEAN NOT NULL, \n"
        "\tupdated_at DATETIME NOT NULL, \n"
        "\tCONSTRAINT pk_tenants PRIMARY KEY (role_name), \n"
        "\tCONSTRAINT uq_tenants_namespace UNIQUE (namespace)\n"
        ")"
    ),
    (
        "CREATE TABLE budget_spenders (\n"
        "\tbudget_scope VARCHAR(9) NOT NULL, \n"
        "\tbudget_namespace VARCHAR(63) NOT NULL, \n"
        "\tbudget_name VARCHAR(63) NOT NULL, \n"
        "\tnamespace VARCHAR(63) NOT NULL, \n"
        "\tCONSTRAINT pk_budget_spenders PRIMARY KEY (budget_scope, budget_namespace, budget_name, namespace), \n"
        "\tCONSTRAINT fk_budget_spenders_budget_limits FOREIGN KEY(budget_scope, budget_namespace, budget_name) REFERENCES budget_limits (budget_scope, budget_namespace, budget_name) ON DELETE CASCADE ON UPDATE CASCADE\n"
        ")"
    ),
    (
        "CREATE TABLE ledger_identity (\n"
        "\tledger_id VARCHAR(36) NOT NULL, \n"
        "\tcreated_at DATETIME NOT NULL, \n"
        "\tCONSTRAINT pk_ledger_identity PRIMARY KEY (ledger_id)\n"
        ")"
    ),
    (
        "CREATE TABLE ledger_summary (\n"
        "\tperiod VARCHAR(7) NOT NULL, \n"
        "\tnamespace VARCHAR(63) NOT NULL, \n"
        "\troute VARCHAR(253) NOT NULL, \n"
        "\tprovider VARCHAR(63) NOT NULL, \n"
        "\tmodel VARCHAR(128) NOT NULL, \n"
        "\trequests BIGINT NOT NULL, \n"
        "\terrors BIGINT NOT NULL, \n"
        "\trefused BIGINT NOT NULL, \n"
        "\ttokens_in BIGINT NOT NULL, \n"
        "\ttokens_out BIGINT NOT NULL, \n"
        "\tcost_usd BIGINT NOT NULL, \n"
        "\tCONSTRAINT pk_ledger_summary PRIMARY KEY (period, namespace, route, provider, model)\n"
        ")"
    ),
    (
        "CREATE TRIGGER ledger_summary_add AFTER INSERT ON ledger_entries\n"
        "BEGIN\n"
        "    INSERT INTO ledger_summary\n"
        "        (period, namespace, route, provider, model, requests, errors, refused, tokens_in, tokens_out, cost_usd)\n"
        "    VALUES (NEW.period, NEW.namespace, NEW.route, NEW.provider, NEW.model, 1,\n"
        "            NEW.status = 'error', NEW.status = 'refused', NEW.tokens_in, NEW.tokens_out,\n"
        "            NEW.cost_usd)\n"
        "    ON CONFLICT (period, namespace, route, provider, model) DO UPDATE\n"
        "        SET requests = requests + excluded.requests, errors = errors + excluded.errors,\n"
        "            refused = refused + excluded.refused, tokens_in = tokens_in + excluded.tokens_in,\n"
        "            tokens_out = tokens_out + excluded.tokens_out,\n"
        "            cost_usd = cost_usd + excluded.cost_usd;\n"
        "END"
    ),
    (
        'CREATE TABLE "budget_periods" (\n'
        "\tbudget_scope VARCHAR(9) NOT NULL, \n"
        "\tbudget_namespace VARCHAR(63) NOT NULL, \n"
        "\tbudget_name VARCHAR(63) NOT NULL, \n"
        "\tperiod VARCHAR(10) NOT NULL, \n"
        "\tprovider VARCHAR(63) NOT NULL, \n"
        "\tlimit_usd BIGINT NOT NULL, \n"
        "\tcommitted_usd BIGINT NOT NULL, \n"
        "\toverdraft_usd BIGINT NOT NULL, \n"
        "\tupdated_at DATETIME NOT NULL, \n"
        "\tCONSTRAINT pk_budget_periods PRIMARY KEY (budget_scope, budget_namespace, budget_name, period), \n"
        "\tCONSTRAINT ck_budget_periods_money_nonnegative CHECK (committed_usd >= 0 AND overdraft_usd >= 0 AND limit_usd >= 0), \n"
        "\tCONSTRAINT ck_budget_periods_budget_scope CHECK (budget_scope IN ('Namespace', 'Cluster') AND (budget_scope = 'Namespace' OR budget_namespace = ''))\n"
        ")"
    ),
    (
        'CREATE TABLE "budget_leases" (\n'
        "\tbudget_scope VARCHAR(9) NOT NULL, \n"
        "\tbudget_namespace VARCHAR(63) NOT NULL, \n"
        "\tbudget_name VARCHAR(63) NOT NULL, \n"
        "\tperiod VARCHAR(10) NOT NULL, \n"
        "\tholder VARCHAR(320) NOT NULL, \n"
        "\tamount_usd BIGINT NOT NULL, \n"
        "\tsettled_usd BIGINT NOT NULL, \n"
        "\tstate VARCHAR(8) NOT NULL, \n"
        "\tepoch BIGINT NOT NULL, \n"
        "\trenewed_at DATETIME NOT NULL, \n"
        "\texpires_at DATETIME NOT NULL, \n"
        "\texposure_usd BIGINT, \n"
        "\tmax_call_seconds INTEGER DEFAULT '0' NOT NULL, \n"
        "\tunknown_usd BIGINT DEFAULT '0' NOT NULL, \n"
        "\treclaimed_at DATETIME, \n"
        "\tCONSTRAINT pk_budget_leases PRIMARY KEY (budget_scope, budget_namespace, budget_name, period, holder), \n"
        "\tCONSTRAINT ck_budget_leases_budget_scope CHECK (budget_scope IN ('Namespace', 'Cluster') AND (budget_scope = 'Namespace' OR budget_namespace = '')), \n"
        "\tCONSTRAINT fk_budget_leases_budget_periods FOREIGN KEY(budget_scope, budget_namespace, budget_name, period) REFERENCES budget_periods (budget_scope, budget_namespace, budget_name, period) ON DELETE CASCADE ON UPDATE CASCADE, \n"
        "\tCONSTRAINT ck_budget_leases_settled_within_amount CHECK (settled_usd >= 0 AND settled_usd <= amount_usd), \n"
        "\tCONSTRAINT ck_budget_leases_state CHECK (state IN ('open', 'closed'))\n"
        ")"
    ),
    "CREATE INDEX ix_budget_leases_holder ON budget_leases (holder)",
)


def head_statements(ledger_id: str, created_at: str) -> list[tuple[str, tuple[str, ...]]]:
    """What brings an empty SQLite database to :data:`REVISION`, in one transaction:
    the tables, the ledger's id as migration 0005 writes it (the spool is bound to
    it; ``created_at`` as SQLite DATETIME text) and the version row."""
    return [
        (VERSION_TABLE_DDL, ()),
        *((statement, ()) for statement in STATEMENTS),
        (
            "INSERT INTO ledger_identity (ledger_id, created_at) VALUES (?, ?)",
            (ledger_id, created_at),
        ),
        ("INSERT INTO aegis_ledger_version (version_num) VALUES (?)", (REVISION,)),
    ]
