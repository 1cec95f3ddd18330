"""The functions tenants (sidecars) call, as migration 0003 creates them (history: a
later change of behaviour is a new migration with new text, never an edit here).

Every function is ``SECURITY DEFINER`` in schema ``aegis`` with ``search_path =
pg_catalog, pg_temp``: our tables and functions are named ``aegis.``-qualified, nothing
a caller may create can be resolved (``pg_temp`` is never searched for functions or
operators, and is last for relations), and calls a better-typed overload could capture
are exact-typed and ``pg_catalog``-qualified (``make_interval``).

Who is calling is ``session_user`` (the login role; a function's ``current_user``
is the owner): :func:`aegis.tenant_namespace` maps it to its namespace through
``aegis.tenants``, which only the owner writes. A lease holder must be
``<that namespace>/<pod>``; a budget may be spent only by the namespaces in
``aegis.budget_spenders``; a ledger row may only be written for the caller's own
namespace. Limits come from ``aegis.budget_limits`` only.
"""

from __future__ import annotations

LEDGER_COLUMNS = (  # model order; each JSON value's SQL type (element 0 is the charges)
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
NAMESPACE_ELEMENT = 1 + [name for name, _ in LEDGER_COLUMNS].index("namespace")

HEADER = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
KEY = "budget_scope = p_scope AND {a}budget_namespace = p_namespace AND {a}budget_name = p_name"


def _key(alias: str) -> str:
    a = f"{alias}." if alias else ""
    return f"{a}{KEY.format(a=a)}"


TENANT_NAMESPACE = f"""
CREATE FUNCTION aegis.tenant_namespace() RETURNS text
STABLE {HEADER} AS $fn$
DECLARE
    v_namespace text;
BEGIN
    SELECT t.namespace INTO v_namespace FROM aegis.tenants t
        WHERE t.role_name = session_user AND t.active;
    IF v_namespace IS NULL THEN
        RAISE EXCEPTION 'role % is not an Aegis ledger tenant', session_user
            USING ERRCODE = '42501';
    END IF;
    RETURN v_namespace;
END
$fn$
"""

TENANT_HOLDER = f"""
CREATE FUNCTION aegis.tenant_holder(p_holder text) RETURNS text
STABLE {HEADER} AS $fn$
DECLARE
    v_namespace text := aegis.tenant_namespace();
BEGIN
    IF p_holder IS NULL OR length(p_holder) > 320
       OR length(p_holder) <= length(v_namespace) + 1
       OR left(p_holder, length(v_namespace) + 1) <> v_namespace || '/' THEN
        RAISE EXCEPTION 'a lease holder of namespace % is %/<pod>', v_namespace, v_namespace
            USING ERRCODE = '42501';
    END IF;
    RETURN v_namespace;
END
$fn$
"""

MAY_SPEND = f"""
CREATE FUNCTION aegis.may_spend(
    p_scope text, p_namespace text, p_name text, p_tenant text) RETURNS boolean
STABLE {HEADER} AS $fn$
BEGIN
    RETURN EXISTS (
        SELECT 1 FROM aegis.budget_spenders s
        WHERE {_key("s")} AND s.namespace IN (p_tenant, '*'));
END
$fn$
"""

TAKE = f"""
CREATE FUNCTION aegis.lease_take(
    p_scope text, p_namespace text, p_name text, p_period text, p_holder text,
    p_want numeric, p_need numeric, p_ttl_seconds integer)
RETURNS TABLE (granted numeric, lease_amount numeric, lease_settled numeric,
               lease_epoch bigint, committed numeric, limit_usd numeric, active integer)
{HEADER} AS $fn$
#variable_conflict use_column
DECLARE
    v_tenant text := aegis.tenant_holder(p_holder);
    v_ttl interval;
    v_limit numeric;
    v_provider text;
    v_committed numeric;
    v_freed numeric := 0;
    v_active integer;
    v_room numeric;
    v_slice numeric := 0;
BEGIN
    IF p_want < 0 OR p_need < 0 OR p_ttl_seconds <= 0 OR p_ttl_seconds > 3600 THEN
        RAISE EXCEPTION 'aegis.lease_take: amounts must be positive, ttl 1..3600 s'
            USING ERRCODE = '22023';
    END IF;
    v_ttl := pg_catalog.make_interval(secs => p_ttl_seconds::double precision);
    -- The limit is the operator's, and only for a budget this namespace may spend
    -- (the same refusal whether the budget exists or not: nothing is disclosed).
    SELECT o.limit_usd, o.provider INTO v_limit, v_provider FROM aegis.budget_limits o
        WHERE {_key("o")} AND aegis.may_spend(p_scope, p_namespace, p_name, v_tenant);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'budget %/%/% is not granted to namespace %',
            p_scope, p_namespace, p_name, v_tenant USING ERRCODE = '42501';
    END IF;
    INSERT INTO aegis.budget_periods AS b
        (budget_scope, budget_namespace, budget_name, period, provider, limit_usd,
         committed_usd, overdraft_usd, updated_at)
        VALUES (p_scope, p_namespace, p_name, p_period, v_provider, v_limit, 0, 0, now())
        ON CONFLICT (budget_scope, budget_namespace, budget_name, period) DO UPDATE
            SET limit_usd = EXCLUDED.limit_usd, provider = EXCLUDED.provider
        RETURNING b.committed_usd INTO v_committed;
    -- Reclaim leases of holders that stopped renewing (see migration 0002).
    IF now() - pg_catalog.pg_postmaster_start_time() > v_ttl THEN
        WITH gone AS (
            SELECT l.holder, l.amount_usd - l.settled_usd AS freed
            FROM aegis.budget_leases l
            WHERE {_key("l")} AND l.period = p_period AND l.state = 'open'
              AND l.holder <> p_holder AND l.expires_at < now()
            FOR UPDATE
        ), closed AS (
            UPDATE aegis.budget_leases l
            SET amount_usd = l.settled_usd, state = 'closed', epoch = l.epoch + 1
            FROM gone
            WHERE {_key("l")} AND l.period = p_period AND l.holder = gone.holder
            RETURNING gone.freed
        )
        SELECT COALESCE(sum(freed), 0) INTO v_freed FROM closed;
    END IF;
    SELECT count(*) INTO v_active FROM aegis.budget_leases l
        WHERE {_key("l")} AND l.period = p_period AND l.state = 'open'
          AND l.holder <> p_holder AND l.amount_usd > l.settled_usd;
    v_room := v_limit - (v_committed - v_freed);
    IF p_want > 0 AND v_room > 0 THEN
        v_slice := LEAST(p_want, GREATEST(p_need, trunc(v_room / (v_active + 1), 6)), v_room);
        IF v_slice < p_need OR v_slice < 0 THEN
            v_slice := 0;
        END IF;
    END IF;
    UPDATE aegis.budget_periods b
        SET committed_usd = b.committed_usd - v_freed + v_slice, updated_at = now()
        WHERE {_key("b")} AND b.period = p_period
          AND (v_slice = 0 OR b.committed_usd - v_freed + v_slice <= v_limit)
        RETURNING b.committed_usd, b.limit_usd INTO committed, limit_usd;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'aegis.lease_take: slice would exceed the limit';
    END IF;
    INSERT INTO aegis.budget_leases AS l
        (budget_scope, budget_namespace, budget_name, period, holder, amount_usd, settled_usd,
         state, epoch, renewed_at, expires_at)
        VALUES (p_scope, p_namespace, p_name, p_period, p_holder, v_slice, 0, 'open', 0, now(),
                now() + v_ttl)
        ON CONFLICT (budget_scope, budget_namespace, budget_name, period, holder) DO UPDATE
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

RETURN = f"""
CREATE FUNCTION aegis.lease_return(
    p_scope text, p_namespace text, p_name text, p_period text, p_holder text,
    p_amount numeric, p_close boolean)
RETURNS TABLE (returned numeric, lease_amount numeric, lease_settled numeric,
               lease_epoch bigint, committed numeric)
{HEADER} AS $fn$
#variable_conflict use_column
DECLARE
    v_tenant text := aegis.tenant_holder(p_holder);
    v_amount numeric;
    v_settled numeric;
BEGIN
    IF p_amount < 0 THEN
        RAISE EXCEPTION 'aegis.lease_return: amount must be positive' USING ERRCODE = '22023';
    END IF;
    SELECT b.committed_usd INTO committed FROM aegis.budget_periods b
        WHERE {_key("b")} AND b.period = p_period FOR UPDATE;
    SELECT l.amount_usd, l.settled_usd INTO v_amount, v_settled FROM aegis.budget_leases l
        WHERE {_key("l")} AND l.period = p_period AND l.holder = p_holder FOR UPDATE;
    IF NOT FOUND THEN
        returned := 0;
        committed := NULL;  -- nothing of a budget one holds no lease in
        RETURN NEXT;
        RETURN;
    END IF;
    returned := GREATEST(LEAST(p_amount, v_amount - v_settled), 0);
    UPDATE aegis.budget_leases l
        SET amount_usd = l.amount_usd - returned,
            state = CASE WHEN p_close THEN 'closed' ELSE l.state END
        WHERE {_key("l")} AND l.period = p_period AND l.holder = p_holder
        RETURNING l.amount_usd, l.settled_usd, l.epoch
        INTO lease_amount, lease_settled, lease_epoch;
    UPDATE aegis.budget_periods b SET committed_usd = b.committed_usd - returned,
            updated_at = now()
        WHERE {_key("b")} AND b.period = p_period
        RETURNING b.committed_usd INTO committed;
    RETURN NEXT;
END
$fn$
"""

TAKEOVER = f"""
CREATE FUNCTION aegis.lease_takeover(p_holder text)
RETURNS TABLE (budget_scope text, budget_namespace text, budget_name text, period text,
               freed numeric)
{HEADER} AS $fn$
#variable_conflict use_column
DECLARE
    v_tenant text := aegis.tenant_holder(p_holder);
    r record;
BEGIN
    FOR r IN SELECT l.budget_scope AS s, l.budget_namespace AS n, l.budget_name AS m,
                    l.period AS p
             FROM aegis.budget_leases l
             WHERE l.holder = p_holder AND l.amount_usd > l.settled_usd
             ORDER BY 1, 2, 3, 4 LOOP
        PERFORM 1 FROM aegis.budget_periods b
            WHERE b.budget_scope = r.s AND b.budget_namespace = r.n AND b.budget_name = r.m
              AND b.period = r.p FOR UPDATE;
        WITH old AS (
            SELECT l.amount_usd - l.settled_usd AS freed FROM aegis.budget_leases l
            WHERE l.budget_scope = r.s AND l.budget_namespace = r.n AND l.budget_name = r.m
              AND l.period = r.p AND l.holder = p_holder
            FOR UPDATE
        ), closed AS (
            UPDATE aegis.budget_leases l
            SET amount_usd = l.settled_usd, state = 'closed', epoch = l.epoch + 1
            FROM old
            WHERE l.budget_scope = r.s AND l.budget_namespace = r.n AND l.budget_name = r.m
              AND l.period = r.p AND l.holder = p_holder
            RETURNING old.freed
        )
        SELECT closed.freed INTO freed FROM closed;
        UPDATE aegis.budget_periods b
            SET committed_usd = b.committed_usd - freed, updated_at = now()
            WHERE b.budget_scope = r.s AND b.budget_namespace = r.n AND b.budget_name = r.m
              AND b.period = r.p;
        budget_scope := r.s;
        budget_namespace := r.n;
        budget_name := r.m;
        period := r.p;
        RETURN NEXT;
    END LOOP;
END
$fn$
"""

# Internal: aegis.ledger_write's charges. A charge to a budget the tenant may neither
# spend nor holds a lease of is not made (the row stays, in the tenant's namespace).
SETTLE = f"""
CREATE FUNCTION aegis.lease_settle(
    p_scope text, p_namespace text, p_name text, p_period text, p_holder text,
    p_amount numeric, p_tenant text)
RETURNS void
{HEADER} AS $fn$
#variable_conflict use_column
DECLARE
    v_amount numeric;
    v_settled numeric;
    v_over numeric;
    v_provider text;
BEGIN
    UPDATE aegis.budget_leases l SET settled_usd = l.settled_usd + p_amount
        WHERE {_key("l")} AND l.period = p_period AND l.holder = p_holder
          AND l.settled_usd + p_amount <= l.amount_usd;
    IF FOUND THEN
        RETURN;
    END IF;
    IF NOT aegis.may_spend(p_scope, p_namespace, p_name, p_tenant) AND NOT EXISTS (
        SELECT 1 FROM aegis.budget_leases l
        WHERE {_key("l")} AND l.period = p_period AND l.holder = p_holder) THEN
        RETURN;
    END IF;
    SELECT o.provider INTO v_provider FROM aegis.budget_limits o WHERE {_key("o")};
    INSERT INTO aegis.budget_periods
        (budget_scope, budget_namespace, budget_name, period, provider, limit_usd,
         committed_usd, overdraft_usd, updated_at)
        VALUES (p_scope, p_namespace, p_name, p_period, COALESCE(v_provider, ''), 0, 0, 0,
                now())
        ON CONFLICT (budget_scope, budget_namespace, budget_name, period) DO NOTHING;
    PERFORM 1 FROM aegis.budget_periods b WHERE {_key("b")} AND b.period = p_period
        FOR UPDATE;
    INSERT INTO aegis.budget_leases
        (budget_scope, budget_namespace, budget_name, period, holder, amount_usd, settled_usd,
         state, epoch, renewed_at, expires_at)
        VALUES (p_scope, p_namespace, p_name, p_period, p_holder, 0, 0, 'closed', 0, now(),
                now())
        ON CONFLICT (budget_scope, budget_namespace, budget_name, period, holder) DO NOTHING;
    SELECT l.amount_usd, l.settled_usd INTO v_amount, v_settled FROM aegis.budget_leases l
        WHERE {_key("l")} AND l.period = p_period AND l.holder = p_holder FOR UPDATE;
    v_over := GREATEST(v_settled + p_amount - v_amount, 0);
    UPDATE aegis.budget_leases l
        SET settled_usd = l.settled_usd + p_amount, amount_usd = l.amount_usd + v_over
        WHERE {_key("l")} AND l.period = p_period AND l.holder = p_holder;
    UPDATE aegis.budget_periods b
        SET committed_usd = b.committed_usd + v_over,
            overdraft_usd = b.overdraft_usd + v_over, updated_at = now()
        WHERE {_key("b")} AND b.period = p_period;
END
$fn$
"""

# A row's charge: "Scope/namespace/name", or a bare name from a spool written before
# 0003: the budget of that name the tenant may spend (its own first), else its own.
BUDGET_KEY = f"""
CREATE FUNCTION aegis.budget_key(p_text text, p_tenant text)
RETURNS TABLE (budget_scope text, budget_namespace text, budget_name text)
STABLE {HEADER} AS $fn$
#variable_conflict use_column
BEGIN
    IF strpos(p_text, '/') > 0 THEN
        budget_scope := split_part(p_text, '/', 1);
        budget_namespace := split_part(p_text, '/', 2);
        budget_name := split_part(p_text, '/', 3);
        RETURN NEXT;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT o.budget_scope::text, o.budget_namespace::text, o.budget_name::text
        FROM aegis.budget_limits o
        WHERE o.budget_name = p_text
          AND aegis.may_spend(o.budget_scope, o.budget_namespace, o.budget_name, p_tenant)
        ORDER BY (o.budget_namespace = p_tenant) DESC, o.budget_scope, o.budget_namespace
        LIMIT 1;
    IF NOT FOUND THEN
        budget_scope := 'Namespace';
        budget_namespace := p_tenant;
        budget_name := p_text;
        RETURN NEXT;
    END IF;
END
$fn$
"""


def write_function() -> str:
    """``aegis.ledger_write``: one statement per batch, rows of the caller's namespace
    only (else a check violation: the writer isolates and rejects that row)."""
    fields = ",\n               ".join(
        f"(r->>{i + 1})::{kind} AS {name}" for i, (name, kind) in enumerate(LEDGER_COLUMNS)
    )
    names = ", ".join(name for name, _ in LEDGER_COLUMNS)
    return f"""
CREATE FUNCTION aegis.ledger_write(p_holder text, p_rows json)
RETURNS integer
{HEADER} AS $fn$
#variable_conflict use_column
DECLARE
    v_tenant text := aegis.tenant_holder(p_holder);
    v_inserted integer;
    v_foreign integer;
    v_scope text[];
    v_namespace text[];
    v_name text[];
    v_period text[];
    v_amount numeric[];
BEGIN
    -- One pass: a row of another namespace fails the statement (undoing the insert);
    -- charges are summed per budget string before it is resolved to keys.
    WITH src AS (
        SELECT r->>0 AS budgets, (r->>{NAMESPACE_ELEMENT}) AS claimed,
               {fields}
        FROM json_array_elements(p_rows) AS r
    ), ins AS (
        INSERT INTO aegis.ledger_entries ({names})
        SELECT {names} FROM src
        ON CONFLICT (request_id) DO NOTHING
        RETURNING request_id, period, cost_usd
    ), charges AS (
        SELECT DISTINCT ON (src.request_id) src.request_id, src.budgets
        FROM src WHERE src.budgets <> ''
    ), summed AS (
        SELECT c.budgets, i.period, sum(i.cost_usd) AS amount
        FROM ins i JOIN charges c ON c.request_id = i.request_id
        WHERE i.cost_usd > 0
        GROUP BY 1, 2
    ), charged AS (
        SELECT k.budget_scope AS s, k.budget_namespace AS n, k.budget_name AS m, x.period,
               sum(x.amount) AS amount
        FROM summed x
        CROSS JOIN LATERAL unnest(string_to_array(x.budgets, ',')) AS b(budget)
        CROSS JOIN LATERAL aegis.budget_key(b.budget, v_tenant) AS k
        GROUP BY 1, 2, 3, 4
    )
    SELECT (SELECT count(*) FROM src WHERE src.claimed IS DISTINCT FROM v_tenant),
           (SELECT count(*) FROM ins),
           array_agg(charged.s ORDER BY charged.s, charged.n, charged.m, charged.period),
           array_agg(charged.n ORDER BY charged.s, charged.n, charged.m, charged.period),
           array_agg(charged.m ORDER BY charged.s, charged.n, charged.m, charged.period),
           array_agg(charged.period ORDER BY charged.s, charged.n, charged.m, charged.period),
           array_agg(charged.amount ORDER BY charged.s, charged.n, charged.m, charged.period)
    INTO v_foreign, v_inserted, v_scope, v_namespace, v_name, v_period, v_amount
    FROM charged;
    IF v_foreign > 0 THEN
        RAISE EXCEPTION 'ledger rows may only be written for namespace %', v_tenant
            USING ERRCODE = '23514';
    END IF;
    FOR i IN 1 .. COALESCE(array_length(v_scope, 1), 0) LOOP
        PERFORM aegis.lease_settle(v_scope[i], v_namespace[i], v_name[i], v_period[i], p_holder,
                                   v_amount[i], v_tenant);
    END LOOP;
    RETURN v_inserted;
END
$fn$
"""


TENANT_FUNCTIONS = {
    "aegis.ledger_write(text, json)": write_function(),
    "aegis.lease_take(text, text, text, text, text, numeric, numeric, integer)": TAKE,
    "aegis.lease_return(text, text, text, text, text, numeric, boolean)": RETURN,
    "aegis.lease_takeover(text)": TAKEOVER,
}
INTERNAL_FUNCTIONS = {
    "aegis.tenant_namespace()": TENANT_NAMESPACE,
    "aegis.tenant_holder(text)": TENANT_HOLDER,
    "aegis.may_spend(text, text, text, text)": MAY_SPEND,
    "aegis.lease_settle(text, text, text, text, text, numeric, text)": SETTLE,
    "aegis.budget_key(text, text)": BUDGET_KEY,
}
