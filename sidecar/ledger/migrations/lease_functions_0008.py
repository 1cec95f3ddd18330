"""The lease functions as the killed-pods migration (0008) makes them: a dead holder's
calls of unknown outcome stay charged (history: a later change is a new module).

Each take or renewal reports the holder's *spare* money: lease money it promises not
to commit (reserve or settle) before its next report, counted as if the take granted
all it wanted (what it does not grant is not spare). The database keeps the lease's
*exposure* (``amount - spare`` after the take: everything the holder may have
committed, settled, in flight or answered and not yet written, until its next
report) and the holder's *maximum call time* (its per-request deadline, bounded here
to ``MAX_CALL_SECONDS``). A lease not renewed is reclaimed only once its expiry plus
that call time has passed (every call the holder started is over by then), and is
closed at ``GREATEST(settled + unknown, exposure)``: the money of calls whose outcome
the ledger does not know stays charged. While the lease is *reclaimed*
(``reclaimed_at`` set), the dead holder's late rows (its spool, replayed by the pod
restarted under the same name) settle against that money, within the amount, so
nothing is charged twice; all of ``amount - settled`` is unknown-outcome money then.
A takeover (the restarted pod, after its replay) closes the previous life's leases
the same way and records what is still unsettled as ``unknown_usd``: final, kept
charged for the rest of the period, and excluded from what a return may give back.
Takes and returns answer it (``lease_unknown``), so that a sidecar never counts it
as money it may spend.
"""

from __future__ import annotations

from .tenant_functions_0003 import HEADER, KEY

MAX_CALL_SECONDS = 3600


def _key(alias: str) -> str:
    """The budget key's condition on the table ``alias`` (as in 0003)."""
    a = f"{alias}." if alias else ""
    return f"{a}{KEY.format(a=a)}"


# What stays charged when a holder's life ends without it closing its lease: the
# exposure it reported (the whole amount when it reported none), never less than what
# is settled or already unknown, never more than the amount.
_KEPT = "LEAST({a}amount_usd, GREATEST({a}settled_usd + {a}unknown_usd, " + (
    "COALESCE({a}exposure_usd, {a}amount_usd)))"
)


def kept(alias: str) -> str:
    a = f"{alias}." if alias else ""
    return _KEPT.format(a=a)


TAKE = f"""
CREATE FUNCTION aegis.lease_take(
    p_scope text, p_namespace text, p_name text, p_period text, p_holder text,
    p_want numeric, p_need numeric, p_ttl_seconds integer, p_spare numeric,
    p_max_call_seconds integer)
RETURNS TABLE (granted numeric, lease_amount numeric, lease_settled numeric,
               lease_epoch bigint, committed numeric, limit_usd numeric, active integer,
               lease_unknown numeric)
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
    v_call integer;
    v_spare numeric := COALESCE(p_spare, 0);
BEGIN
    IF p_want < 0 OR p_need < 0 OR v_spare < 0 OR p_ttl_seconds <= 0 OR p_ttl_seconds > 3600
       OR p_max_call_seconds < 0 THEN
        RAISE EXCEPTION 'aegis.lease_take: amounts must be positive, ttl 1..3600 s, '
            'the call time positive' USING ERRCODE = '22023';
    END IF;
    v_ttl := pg_catalog.make_interval(secs => p_ttl_seconds::double precision);
    v_call := LEAST(COALESCE(p_max_call_seconds, 0), {MAX_CALL_SECONDS});
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
    -- Reclaim leases of holders that stopped renewing, once every call they may have
    -- started is over (expiry + their maximum call time): what they may have
    -- committed (their exposure) stays charged, the rest returns to the budget. Not
    -- within one TTL of a PostgreSQL restart (every holder first gets the time to
    -- reconnect and renew).
    IF now() - pg_catalog.pg_postmaster_start_time() > v_ttl THEN
        WITH gone AS (
            SELECT l.holder, l.amount_usd - {kept("l")} AS freed
            FROM aegis.budget_leases l
            WHERE {_key("l")} AND l.period = p_period AND l.state = 'open'
              AND l.holder <> p_holder
              AND l.expires_at + pg_catalog.make_interval(
                    secs => l.max_call_seconds::double precision) < now()
            FOR UPDATE
        ), closed AS (
            UPDATE aegis.budget_leases l
            SET amount_usd = l.amount_usd - gone.freed, state = 'closed',
                epoch = l.epoch + 1, reclaimed_at = now()
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
    -- The spare money was counted on getting all that was wanted: what was not
    -- granted is not spare.
    v_spare := GREATEST(v_spare - (p_want - v_slice), 0);
    -- A holder back after its lease was reclaimed (cut off, not dead): what that
    -- reclaim kept becomes final unknown-outcome money (its late rows settle within it).
    INSERT INTO aegis.budget_leases AS l
        (budget_scope, budget_namespace, budget_name, period, holder, amount_usd, settled_usd,
         state, epoch, renewed_at, expires_at, exposure_usd, max_call_seconds, unknown_usd)
        VALUES (p_scope, p_namespace, p_name, p_period, p_holder, v_slice, 0, 'open', 0, now(),
                now() + v_ttl, GREATEST(v_slice - v_spare, 0), v_call, 0)
        ON CONFLICT (budget_scope, budget_namespace, budget_name, period, holder) DO UPDATE
            SET amount_usd = l.amount_usd + EXCLUDED.amount_usd, state = 'open',
                renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at,
                exposure_usd = GREATEST(l.amount_usd + EXCLUDED.amount_usd - v_spare, 0),
                max_call_seconds = EXCLUDED.max_call_seconds,
                unknown_usd = CASE WHEN l.reclaimed_at IS NULL THEN l.unknown_usd
                                   ELSE l.amount_usd - l.settled_usd END,
                reclaimed_at = NULL
        RETURNING l.amount_usd, l.settled_usd, l.epoch, l.unknown_usd
        INTO lease_amount, lease_settled, lease_epoch, lease_unknown;
    granted := v_slice;
    active := v_active + 1;
    RETURN NEXT;
END
$fn$
"""

# The take of 0003, for sidecars of an earlier version: they report no spare money
# and no call time (spare 0: their whole lease stays charged if they die).
TAKE_0003 = f"""
CREATE OR REPLACE FUNCTION aegis.lease_take(
    p_scope text, p_namespace text, p_name text, p_period text, p_holder text,
    p_want numeric, p_need numeric, p_ttl_seconds integer)
RETURNS TABLE (granted numeric, lease_amount numeric, lease_settled numeric,
               lease_epoch bigint, committed numeric, limit_usd numeric, active integer)
{HEADER} AS $fn$
BEGIN
    RETURN QUERY
        SELECT t.granted, t.lease_amount, t.lease_settled, t.lease_epoch, t.committed,
               t.limit_usd, t.active
        FROM aegis.lease_take(p_scope, p_namespace, p_name, p_period, p_holder, p_want,
                              p_need, p_ttl_seconds, 0::numeric, 0) AS t;
END
$fn$
"""

RETURN = f"""
CREATE FUNCTION aegis.lease_return(
    p_scope text, p_namespace text, p_name text, p_period text, p_holder text,
    p_amount numeric, p_close boolean)
RETURNS TABLE (returned numeric, lease_amount numeric, lease_settled numeric,
               lease_epoch bigint, committed numeric, lease_unknown numeric)
{HEADER} AS $fn$
#variable_conflict use_column
DECLARE
    v_tenant text := aegis.tenant_holder(p_holder);
    v_amount numeric;
    v_settled numeric;
    v_unknown numeric;
    v_reclaimed timestamptz;
BEGIN
    IF p_amount < 0 THEN
        RAISE EXCEPTION 'aegis.lease_return: amount must be positive' USING ERRCODE = '22023';
    END IF;
    SELECT b.committed_usd INTO committed FROM aegis.budget_periods b
        WHERE {_key("b")} AND b.period = p_period FOR UPDATE;
    SELECT l.amount_usd, l.settled_usd, l.unknown_usd, l.reclaimed_at
        INTO v_amount, v_settled, v_unknown, v_reclaimed FROM aegis.budget_leases l
        WHERE {_key("l")} AND l.period = p_period AND l.holder = p_holder FOR UPDATE;
    IF NOT FOUND THEN
        returned := 0;
        committed := NULL;  -- nothing of a budget one holds no lease in
        RETURN NEXT;
        RETURN;
    END IF;
    -- Never settled money, nor money kept for calls of unknown outcome (all that a
    -- reclaimed lease still holds).
    returned := CASE WHEN v_reclaimed IS NOT NULL THEN 0
                     ELSE GREATEST(LEAST(p_amount, v_amount - v_settled - v_unknown), 0) END;
    UPDATE aegis.budget_leases l
        SET amount_usd = l.amount_usd - returned,
            state = CASE WHEN p_close THEN 'closed' ELSE l.state END
        WHERE {_key("l")} AND l.period = p_period AND l.holder = p_holder
        RETURNING l.amount_usd, l.settled_usd, l.epoch, l.unknown_usd
        INTO lease_amount, lease_settled, lease_epoch, lease_unknown;
    UPDATE aegis.budget_periods b SET committed_usd = b.committed_usd - returned,
            updated_at = now()
        WHERE {_key("b")} AND b.period = p_period
        RETURNING b.committed_usd INTO committed;
    RETURN NEXT;
END
$fn$
"""

TAKEOVER = f"""
CREATE OR REPLACE FUNCTION aegis.lease_takeover(p_holder text)
RETURNS TABLE (budget_scope text, budget_namespace text, budget_name text, period text,
               freed numeric)
{HEADER} AS $fn$
#variable_conflict use_column
DECLARE
    v_tenant text := aegis.tenant_holder(p_holder);
    r record;
BEGIN
    -- After the spool replay: every row of the previous life is settled. What it had
    -- committed beyond them (its exposure) was in flight when it died: kept, as
    -- unknown-outcome money; the rest returns to the budget.
    FOR r IN SELECT l.budget_scope AS s, l.budget_namespace AS n, l.budget_name AS m,
                    l.period AS p
             FROM aegis.budget_leases l
             WHERE l.holder = p_holder
               AND (l.amount_usd > l.settled_usd + l.unknown_usd OR l.reclaimed_at IS NOT NULL)
             ORDER BY 1, 2, 3, 4 LOOP
        PERFORM 1 FROM aegis.budget_periods b
            WHERE b.budget_scope = r.s AND b.budget_namespace = r.n AND b.budget_name = r.m
              AND b.period = r.p FOR UPDATE;
        WITH old AS (
            SELECT l.amount_usd - {kept("l")} AS freed FROM aegis.budget_leases l
            WHERE l.budget_scope = r.s AND l.budget_namespace = r.n AND l.budget_name = r.m
              AND l.period = r.p AND l.holder = p_holder
            FOR UPDATE
        ), closed AS (
            UPDATE aegis.budget_leases l
            SET amount_usd = l.amount_usd - old.freed, state = 'closed', epoch = l.epoch + 1,
                unknown_usd = l.amount_usd - old.freed - l.settled_usd, reclaimed_at = NULL,
                exposure_usd = NULL
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

NEW_TENANT_FUNCTIONS = {
    "aegis.lease_take(text, text, text, text, text, numeric, numeric, integer, numeric, "
    "integer)": TAKE,
}
# Same signature, new answer (``lease_unknown``): dropped and created again, then
# granted to the tenants again.
RECREATED_FUNCTIONS = {
    "aegis.lease_return(text, text, text, text, text, numeric, boolean)": RETURN,
}
REPLACED_FUNCTIONS = {
    "aegis.lease_take(text, text, text, text, text, numeric, numeric, integer)": TAKE_0003,
    "aegis.lease_takeover(text)": TAKEOVER,
}
