"""Shared budgets: per-period budget rows, leases, operator limits, SQL functions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-01

Tables (both backends, so the models match everywhere; only PostgreSQL uses them):
- ``budget_limits``: the limit of a budget as the operator last set it (optional;
  a sidecar may only lower it for its own leases, never raise it);
- ``budget_periods``: one row per (budget, calendar month): ``committed_usd`` is
  the sum of every holder's lease amount and never exceeds the limit;
- ``budget_leases``: one row per (budget, month, holder): ``amount_usd`` is the
  money committed to that sidecar (spent or still held), ``settled_usd`` what its
  ledger rows have charged so far (always <= ``amount_usd``).

PostgreSQL also gets the functions sidecars call (SECURITY DEFINER, so the
sidecar role needs EXECUTE only, no table privilege), and a covering index for
the rollout statistics. Every function locks the period row before any lease row
of it, so they cannot deadlock on each other. See docs/ledger.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(18, 6).with_variant(sa.BigInteger(), "sqlite")
INSTANT = sa.DateTime(timezone=True)

# Ledger columns in model order with the SQL type each JSON value is cast to. An
# explicit cast to varchar(n) cuts a longer string instead of failing, as
# LedgerRecord.as_params does for the typed path.
LEDGER_COLUMNS = (
    ("request_id", "varchar(128)"),
    ("created_at", "timestamptz"),
    ("period", "varchar(7)"),
    ("namespace", "varchar(63)"),
    ("pod", "varchar(253)"),
    ("route", "varchar(253)"),
    ("rule", "varchar(63)"),
    ("arm", "varchar(16)"),
    ("provider", "varchar(63)"),
    ("model", "varchar(128)"),
    ("data_class", "varchar(32)"),
    ("tokens_in", "integer"),
    ("tokens_out", "integer"),
    ("cost_usd", "numeric(18, 6)"),
    ("latency_ms", "integer"),
    ("ttft_ms", "integer"),
    ("status", "varchar(16)"),
    ("http_status", "smallint"),
    ("fallback_reason", "varchar(64)"),
    ("attempts", "smallint"),
)

TAKE = """
CREATE FUNCTION aegis_lease_take(
    p_budget text, p_period text, p_provider text, p_holder text,
    p_limit numeric, p_want numeric, p_need numeric, p_ttl_seconds integer)
RETURNS TABLE (granted numeric, lease_amount numeric, lease_settled numeric,
               lease_epoch bigint, committed numeric, limit_usd numeric, active integer)
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
#variable_conflict use_column
DECLARE
    v_limit numeric;
    v_committed numeric;
    v_freed numeric := 0;
    v_active integer;
    v_room numeric;
    v_slice numeric := 0;
BEGIN
    IF p_limit < 0 OR p_want < 0 OR p_need < 0 OR p_ttl_seconds <= 0 THEN
        RAISE EXCEPTION 'aegis_lease_take: amounts and ttl must be positive'
            USING ERRCODE = '22023';
    END IF;
    -- The operator's limit, when set, caps the sidecar's: a sidecar can lower
    -- the limit for its own leases, never raise it.
    SELECT LEAST(p_limit, o.limit_usd) INTO v_limit FROM budget_limits o
        WHERE o.budget = p_budget;
    v_limit := COALESCE(v_limit, p_limit);
    -- The period row, created by the first taker of the month (nothing resets),
    -- and locked until the end of this statement.
    INSERT INTO budget_periods AS b
        (budget, period, provider, limit_usd, committed_usd, overdraft_usd, updated_at)
        VALUES (p_budget, p_period, p_provider, v_limit, 0, 0, now())
        ON CONFLICT (budget, period) DO UPDATE
            SET limit_usd = EXCLUDED.limit_usd, provider = EXCLUDED.provider
        RETURNING b.committed_usd INTO v_committed;
    -- Reclaim the leases of holders that stopped renewing (crashed, or cut off
    -- and failing closed): what they settled stays spent, the rest comes back.
    -- Not within one TTL of a server restart: sidecars first get the time to
    -- reconnect, renew and replay their spools.
    IF now() - pg_postmaster_start_time() > make_interval(secs => p_ttl_seconds) THEN
        WITH gone AS (
            SELECT l.holder, l.amount_usd - l.settled_usd AS freed
            FROM budget_leases l
            WHERE l.budget = p_budget AND l.period = p_period AND l.state = 'open'
              AND l.holder <> p_holder AND l.expires_at < now()
            FOR UPDATE
        ), closed AS (
            UPDATE budget_leases l
            SET amount_usd = l.settled_usd, state = 'closed', epoch = l.epoch + 1
            FROM gone
            WHERE l.budget = p_budget AND l.period = p_period AND l.holder = gone.holder
            RETURNING gone.freed
        )
        SELECT COALESCE(sum(freed), 0) INTO v_freed FROM closed;
    END IF;
    SELECT count(*) INTO v_active FROM budget_leases l
        WHERE l.budget = p_budget AND l.period = p_period AND l.state = 'open'
          AND l.holder <> p_holder AND l.amount_usd > l.settled_usd;
    -- Slice: the wanted amount, but no more than a fair share of what is left
    -- (so the last dollars are not stranded in idle sidecars), and at least the
    -- reservation that asked for it; nothing if even that does not fit.
    v_room := v_limit - (v_committed - v_freed);
    IF p_want > 0 AND v_room > 0 THEN
        v_slice := LEAST(p_want, GREATEST(p_need, trunc(v_room / (v_active + 1), 6)), v_room);
        IF v_slice < p_need OR v_slice < 0 THEN
            v_slice := 0;
        END IF;
    END IF;
    UPDATE budget_periods b
        SET committed_usd = b.committed_usd - v_freed + v_slice, updated_at = now()
        WHERE b.budget = p_budget AND b.period = p_period
          AND (v_slice = 0 OR b.committed_usd - v_freed + v_slice <= v_limit)
        RETURNING b.committed_usd, b.limit_usd INTO committed, limit_usd;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'aegis_lease_take: slice would exceed the limit';
    END IF;
    INSERT INTO budget_leases AS l
        (budget, period, holder, amount_usd, settled_usd, state, epoch, renewed_at, expires_at)
        VALUES (p_budget, p_period, p_holder, v_slice, 0, 'open', 0, now(),
                now() + make_interval(secs => p_ttl_seconds))
        ON CONFLICT (budget, period, holder) DO UPDATE
            SET amount_usd = l.amount_usd + EXCLUDED.amount_usd, state = 'open',
                renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at
        RETURNING l.amount_usd, l.settled_usd, l.epoch
        INTO lease_amount, lease_settled, lease_epoch;
    granted := v_slice;
    active := v_active + 1;
    RETURN NEXT;
END
$fn$
"""

RETURN = """
CREATE FUNCTION aegis_lease_return(
    p_budget text, p_period text, p_holder text, p_amount numeric, p_close boolean)
RETURNS TABLE (returned numeric, lease_amount numeric, lease_settled numeric,
               lease_epoch bigint, committed numeric)
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
#variable_conflict use_column
DECLARE
    v_amount numeric;
    v_settled numeric;
BEGIN
    IF p_amount < 0 THEN
        RAISE EXCEPTION 'aegis_lease_return: amount must be positive' USING ERRCODE = '22023';
    END IF;
    SELECT b.committed_usd INTO committed FROM budget_periods b
        WHERE b.budget = p_budget AND b.period = p_period FOR UPDATE;
    SELECT l.amount_usd, l.settled_usd INTO v_amount, v_settled FROM budget_leases l
        WHERE l.budget = p_budget AND l.period = p_period AND l.holder = p_holder FOR UPDATE;
    IF NOT FOUND THEN
        returned := 0;
        RETURN NEXT;
        RETURN;
    END IF;
    -- Settled money is spent: it never goes back, whatever the caller says.
    returned := GREATEST(LEAST(p_amount, v_amount - v_settled), 0);
    UPDATE budget_leases l
        SET amount_usd = l.amount_usd - returned,
            state = CASE WHEN p_close THEN 'closed' ELSE l.state END
        WHERE l.budget = p_budget AND l.period = p_period AND l.holder = p_holder
        RETURNING l.amount_usd, l.settled_usd, l.epoch
        INTO lease_amount, lease_settled, lease_epoch;
    UPDATE budget_periods b SET committed_usd = b.committed_usd - returned, updated_at = now()
        WHERE b.budget = p_budget AND b.period = p_period
        RETURNING b.committed_usd INTO committed;
    RETURN NEXT;
END
$fn$
"""

TAKEOVER = """
CREATE FUNCTION aegis_lease_takeover(p_holder text)
RETURNS TABLE (budget text, period text, freed numeric)
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
#variable_conflict use_column
DECLARE
    r record;
BEGIN
    -- A restarted sidecar, after replaying its spool (so every row of its
    -- previous life is settled), closes that life's leases at what they settled.
    FOR r IN SELECT l.budget, l.period FROM budget_leases l
             WHERE l.holder = p_holder AND l.amount_usd > l.settled_usd
             ORDER BY l.budget, l.period LOOP
        PERFORM 1 FROM budget_periods b
            WHERE b.budget = r.budget AND b.period = r.period FOR UPDATE;
        WITH old AS (
            SELECT l.amount_usd - l.settled_usd AS freed FROM budget_leases l
            WHERE l.budget = r.budget AND l.period = r.period AND l.holder = p_holder
            FOR UPDATE
        ), closed AS (
            UPDATE budget_leases l
            SET amount_usd = l.settled_usd, state = 'closed', epoch = l.epoch + 1
            FROM old
            WHERE l.budget = r.budget AND l.period = r.period AND l.holder = p_holder
            RETURNING old.freed
        )
        SELECT closed.freed INTO freed FROM closed;
        UPDATE budget_periods b SET committed_usd = b.committed_usd - freed, updated_at = now()
            WHERE b.budget = r.budget AND b.period = r.period;
        budget := r.budget;
        period := r.period;
        RETURN NEXT;
    END LOOP;
END
$fn$
"""

SETTLE = """
CREATE FUNCTION aegis_lease_settle(
    p_budget text, p_period text, p_holder text, p_amount numeric)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
#variable_conflict use_column
DECLARE
    v_amount numeric;
    v_settled numeric;
    v_over numeric;
BEGIN
    -- Normal case: the lease covers the spend; only this holder's row is touched.
    UPDATE budget_leases l SET settled_usd = l.settled_usd + p_amount
        WHERE l.budget = p_budget AND l.period = p_period AND l.holder = p_holder
          AND l.settled_usd + p_amount <= l.amount_usd;
    IF FOUND THEN
        RETURN;
    END IF;
    -- Spend beyond the lease (a settlement above its reservation, or rows that
    -- arrive after the lease was reclaimed): it happened, so it is charged to
    -- the budget, and counted as overdraft so that it is visible.
    INSERT INTO budget_periods
        (budget, period, provider, limit_usd, committed_usd, overdraft_usd, updated_at)
        VALUES (p_budget, p_period, '', 0, 0, 0, now())
        ON CONFLICT (budget, period) DO NOTHING;
    PERFORM 1 FROM budget_periods b
        WHERE b.budget = p_budget AND b.period = p_period FOR UPDATE;
    INSERT INTO budget_leases
        (budget, period, holder, amount_usd, settled_usd, state, epoch, renewed_at, expires_at)
        VALUES (p_budget, p_period, p_holder, 0, 0, 'closed', 0, now(), now())
        ON CONFLICT (budget, period, holder) DO NOTHING;
    SELECT l.amount_usd, l.settled_usd INTO v_amount, v_settled FROM budget_leases l
        WHERE l.budget = p_budget AND l.period = p_period AND l.holder = p_holder FOR UPDATE;
    v_over := GREATEST(v_settled + p_amount - v_amount, 0);
    UPDATE budget_leases l
        SET settled_usd = l.settled_usd + p_amount, amount_usd = l.amount_usd + v_over
        WHERE l.budget = p_budget AND l.period = p_period AND l.holder = p_holder;
    UPDATE budget_periods b
        SET committed_usd = b.committed_usd + v_over,
            overdraft_usd = b.overdraft_usd + v_over, updated_at = now()
        WHERE b.budget = p_budget AND b.period = p_period;
END
$fn$
"""


def _write_function() -> str:
    # Element 0 of each row array is the budgets it is charged to, then the columns.
    fields = ",\n               ".join(
        f"(r->>{i + 1})::{kind} AS {name}" for i, (name, kind) in enumerate(LEDGER_COLUMNS)
    )
    names = ", ".join(name for name, _ in LEDGER_COLUMNS)
    return f"""
CREATE FUNCTION aegis_ledger_write(p_holder text, p_rows json)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
#variable_conflict use_column
DECLARE
    v_inserted integer;
    v_budget text[];
    v_period text[];
    v_amount numeric[];
BEGIN
    -- One statement per batch: insert the rows (idempotent on request id) and
    -- charge the newly inserted ones to the leases named in element 0 of each
    -- row (comma-separated budgets), in the same transaction.
    WITH src AS (
        SELECT r->>0 AS budgets,
               {fields}
        FROM json_array_elements(p_rows) AS r
    ), ins AS (
        INSERT INTO ledger_entries ({names})
        SELECT {names} FROM src
        ON CONFLICT (request_id) DO NOTHING
        RETURNING request_id, period, cost_usd
    ), charges AS (
        SELECT DISTINCT ON (src.request_id) src.request_id, src.budgets
        FROM src WHERE src.budgets <> ''
    ), charged AS (
        SELECT b.budget, i.period, sum(i.cost_usd) AS amount
        FROM ins i
        JOIN charges c ON c.request_id = i.request_id
        CROSS JOIN LATERAL unnest(string_to_array(c.budgets, ',')) AS b(budget)
        WHERE i.cost_usd > 0
        GROUP BY b.budget, i.period
    )
    SELECT (SELECT count(*) FROM ins),
           array_agg(charged.budget ORDER BY charged.budget, charged.period),
           array_agg(charged.period ORDER BY charged.budget, charged.period),
           array_agg(charged.amount ORDER BY charged.budget, charged.period)
    INTO v_inserted, v_budget, v_period, v_amount
    FROM charged;
    FOR i IN 1 .. COALESCE(array_length(v_budget, 1), 0) LOOP
        PERFORM aegis_lease_settle(v_budget[i], v_period[i], p_holder, v_amount[i]);
    END LOOP;
    RETURN v_inserted;
END
$fn$
"""


FUNCTIONS = {
    "aegis_lease_take(text, text, text, text, numeric, numeric, numeric, integer)": TAKE,
    "aegis_lease_return(text, text, text, numeric, boolean)": RETURN,
    "aegis_lease_takeover(text)": TAKEOVER,
    "aegis_lease_settle(text, text, text, numeric)": SETTLE,
    "aegis_ledger_write(text, json)": _write_function(),
}

# SECURITY DEFINER functions must not resolve names through a search path the
# caller controls: pin it to the schema the tables were created in.
PIN_SEARCH_PATH = """
DO $do$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[{names}] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$do$
"""


def upgrade() -> None:
    op.create_table(
        "budget_limits",
        sa.Column("budget", sa.String(63), nullable=False),
        sa.Column("limit_usd", MONEY, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.PrimaryKeyConstraint("budget", name=op.f("pk_budget_limits")),
        sa.CheckConstraint("limit_usd >= 0", name=op.f("ck_budget_limits_limit_nonnegative")),
    )
    op.create_table(
        "budget_periods",
        sa.Column("budget", sa.String(63), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("limit_usd", MONEY, nullable=False),
        sa.Column("committed_usd", MONEY, nullable=False),
        sa.Column("overdraft_usd", MONEY, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.PrimaryKeyConstraint("budget", "period", name=op.f("pk_budget_periods")),
        sa.CheckConstraint(
            "committed_usd >= 0 AND overdraft_usd >= 0 AND limit_usd >= 0",
            name=op.f("ck_budget_periods_money_nonnegative"),
        ),
    )
    op.create_table(
        "budget_leases",
        sa.Column("budget", sa.String(63), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("holder", sa.String(320), nullable=False),
        sa.Column("amount_usd", MONEY, nullable=False),
        sa.Column("settled_usd", MONEY, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("renewed_at", INSTANT, nullable=False),
        sa.Column("expires_at", INSTANT, nullable=False),
        sa.PrimaryKeyConstraint("budget", "period", "holder", name=op.f("pk_budget_leases")),
        sa.ForeignKeyConstraint(
            ["budget", "period"],
            ["budget_periods.budget", "budget_periods.period"],
            name=op.f("fk_budget_leases_budget_period_budget_periods"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("state IN ('open', 'closed')", name=op.f("ck_budget_leases_state")),
        sa.CheckConstraint(
            "settled_usd >= 0 AND settled_usd <= amount_usd",
            name=op.f("ck_budget_leases_settled_within_amount"),
        ),
    )
    op.create_index(op.f("ix_budget_leases_holder"), "budget_leases", ["holder"])
    if op.get_context().dialect.name != "postgresql":
        return
    # Rollout statistics read status, latency and cost of a route's arms over a
    # window: with them in the index the query never touches the table.
    op.drop_index(op.f("ix_ledger_entries_route_arm_created_at"), table_name="ledger_entries")
    op.create_index(
        op.f("ix_ledger_entries_route_arm_created_at"),
        "ledger_entries",
        ["route", "arm", "created_at"],
        postgresql_include=["status", "latency_ms", "cost_usd"],
    )
    for sql in FUNCTIONS.values():
        op.execute(sql)
    names = ", ".join(f"'{signature}'" for signature in FUNCTIONS)
    op.execute(PIN_SEARCH_PATH.replace("{names}", names))


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for signature in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {signature}")
        op.drop_index(op.f("ix_ledger_entries_route_arm_created_at"), table_name="ledger_entries")
        op.create_index(
            op.f("ix_ledger_entries_route_arm_created_at"),
            "ledger_entries",
            ["route", "arm", "created_at"],
        )
    op.drop_index(op.f("ix_budget_leases_holder"), table_name="budget_leases")
    op.drop_table("budget_leases")
    op.drop_table("budget_periods")
    op.drop_table("budget_limits")
