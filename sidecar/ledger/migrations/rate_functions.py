"""The rate-limit functions as the rate-limits migration makes them (history: a later
change is a new module).

A limit of R per window (60 s) is R *slots*, leased like budget money: each sidecar
holds some (``rate_leases.amount``) and the pool row keeps ``committed`` = the sum of
the holders' amounts, never above the limit when it grows. A sidecar never gives
back a slot used less than a window ago, so at any instant every admission of the
last window occupies a held slot, and the admissions of any window are at most R.

- ``aegis.rate_lease`` (tenants): one statement sets the caller's lease to what it
  wants: lower (it gives back slots it knows to be free), or higher by at most a
  fair share of the room (``room / (active holders + 1)``, at least ``need``, all or
  nothing), and renews its expiry. Statements carry the holder's increasing ``seq``:
  one arriving after a newer one was applied changes nothing (a late lowering must
  not take back slots the holder was since granted). ``fresh``: the first statement
  of a process, which never lowers (a restarted sidecar does not know which slots
  its previous life used in the last window). Holders not renewed for their TTL plus
  the window are reclaimed (their slots aged out), not within that time of a server
  start. A fresh statement answers what the lease already held (``carried``).
  A Route limit is the caller's own namespace's (the limit is the caller's:
  its route's config); a Budget limit is the operator's (``aegis.rate_limits``) and
  only for a namespace that may spend the budget (``aegis.may_spend``).
- ``aegis.set_rate_limits`` (control): a budget's limits, written by the operator.
"""

from __future__ import annotations

from .control_functions_0003 import CHECK_KEY
from .tenant_functions_0003 import HEADER

WINDOW_SECONDS = 60
_KEY = "{a}kind = p_kind AND {a}namespace = p_namespace AND {a}name = p_name AND {a}unit = p_unit"


def _key(alias: str) -> str:
    return _KEY.format(a=f"{alias}.")


RATE_LEASE = f"""
CREATE FUNCTION aegis.rate_lease(
    p_kind text, p_namespace text, p_name text, p_unit text, p_holder text, p_seq bigint,
    p_want bigint, p_need bigint, p_limit bigint, p_ttl_seconds integer, p_fresh boolean)
RETURNS TABLE (lease_amount bigint, carried bigint, committed bigint, limit_value bigint,
               active integer, short integer, applied boolean)
{HEADER} AS $fn$
#variable_conflict use_column
DECLARE
    v_tenant text := aegis.tenant_holder(p_holder);
    v_ttl interval;
    v_window interval := pg_catalog.make_interval(secs => {WINDOW_SECONDS}::double precision);
    v_limit bigint;
    v_committed bigint;
    v_freed bigint := 0;
    v_cur bigint := 0;
    v_seq bigint;
    v_new bigint;
    v_room bigint;
    v_others integer;
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('Route', 'Budget') OR p_unit IS NULL
       OR p_unit NOT IN ('requests', 'tokens') OR p_namespace IS NULL OR p_name IS NULL
       OR p_want IS NULL OR p_want < 0 OR p_need IS NULL OR p_need < 0 OR p_seq IS NULL
       OR p_ttl_seconds IS NULL OR p_ttl_seconds <= 0 OR p_ttl_seconds > 3600 THEN
        RAISE EXCEPTION 'aegis.rate_lease: kind Route|Budget, unit requests|tokens, '
            'amounts >= 0, ttl 1..3600 s' USING ERRCODE = '22023';
    END IF;
    v_ttl := pg_catalog.make_interval(secs => p_ttl_seconds::double precision);
    IF p_kind = 'Route' THEN
        IF p_namespace <> v_tenant OR p_limit IS NULL OR p_limit < 0 THEN
            RAISE EXCEPTION 'rate limit %/%/% is not granted to namespace %',
                p_kind, p_namespace, p_name, v_tenant USING ERRCODE = '42501';
        END IF;
        v_limit := p_limit;
    ELSE
        SELECT CASE WHEN p_unit = 'requests' THEN r.requests_per_minute
                    ELSE r.tokens_per_minute END INTO v_limit
            FROM aegis.rate_limits r
            WHERE r.kind = 'Budget' AND r.namespace = p_namespace AND r.name = p_name
              AND aegis.may_spend(CASE WHEN p_namespace = '' THEN 'Cluster' ELSE 'Namespace' END,
                                  p_namespace, p_name, v_tenant);
        IF v_limit IS NULL THEN
            RAISE EXCEPTION 'rate limit %/%/% is not granted to namespace %',
                p_kind, p_namespace, p_name, v_tenant USING ERRCODE = '42501';
        END IF;
    END IF;
    INSERT INTO aegis.rate_pools AS o (kind, namespace, name, unit, limit_value, committed,
                                       updated_at)
        VALUES (p_kind, p_namespace, p_name, p_unit, v_limit, 0, now())
        ON CONFLICT (kind, namespace, name, unit) DO UPDATE SET limit_value = EXCLUDED.limit_value
        RETURNING o.committed INTO v_committed;
    -- Holders that stopped renewing: their last admission is a window old by now.
    IF now() - pg_catalog.pg_postmaster_start_time() > v_ttl + v_window THEN
        WITH gone AS (
            DELETE FROM aegis.rate_leases l
            WHERE {_key("l")} AND l.holder <> p_holder AND l.expires_at + v_window < now()
            RETURNING l.amount
        )
        SELECT COALESCE(sum(gone.amount), 0) INTO v_freed FROM gone;
    END IF;
    SELECT l.amount, l.seq INTO v_cur, v_seq FROM aegis.rate_leases l
        WHERE {_key("l")} AND l.holder = p_holder FOR UPDATE;
    IF NOT FOUND THEN
        v_cur := 0;
        v_seq := NULL;
    END IF;
    applied := p_fresh OR v_seq IS NULL OR p_seq > v_seq;
    v_new := v_cur;
    IF applied AND p_want < v_cur AND NOT p_fresh THEN
        v_new := p_want;
    ELSIF applied AND p_want > v_cur THEN
        SELECT count(*) INTO v_others FROM aegis.rate_leases l
            WHERE {_key("l")} AND l.holder <> p_holder AND l.amount > 0;
        v_room := v_limit - (v_committed - v_freed);
        IF v_room > 0 THEN
            v_new := v_cur + LEAST(p_want - v_cur, GREATEST(p_need, v_room / (v_others + 1)),
                                   v_room);
            IF v_new - v_cur < p_need THEN
                v_new := v_cur;
            END IF;
        END IF;
    END IF;
    UPDATE aegis.rate_pools o
        SET committed = o.committed - v_freed + (v_new - v_cur), updated_at = now()
        WHERE {_key("o")} AND (v_new <= v_cur OR o.committed - v_freed + (v_new - v_cur) <= v_limit)
        RETURNING o.committed, o.limit_value INTO committed, limit_value;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'aegis.rate_lease: the lease would exceed the limit';
    END IF;
    IF applied THEN
        INSERT INTO aegis.rate_leases AS l (kind, namespace, name, unit, holder, amount, wanted,
                                            seq, renewed_at, expires_at)
            VALUES (p_kind, p_namespace, p_name, p_unit, p_holder, v_new, p_want, p_seq, now(),
                    now() + v_ttl)
            ON CONFLICT (kind, namespace, name, unit, holder) DO UPDATE
                SET amount = EXCLUDED.amount, wanted = EXCLUDED.wanted, seq = EXCLUDED.seq,
                    renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at;
    END IF;
    lease_amount := v_new;
    carried := CASE WHEN p_fresh THEN v_cur ELSE 0 END;
    SELECT count(*) FILTER (WHERE l.amount > 0 OR l.wanted > l.amount),
           count(*) FILTER (WHERE l.wanted > l.amount AND l.holder <> p_holder)
        INTO active, short
        FROM aegis.rate_leases l WHERE {_key("l")} AND l.expires_at > now();
    RETURN NEXT;
END
$fn$
"""

SET_RATE_LIMITS = f"""
CREATE FUNCTION aegis.set_rate_limits(
    p_scope text, p_namespace text, p_name text, p_requests bigint, p_tokens bigint)
RETURNS void
{HEADER} AS $fn$
BEGIN
{CHECK_KEY}
    IF p_requests < 1 OR p_tokens < 1 THEN
        RAISE EXCEPTION 'a rate limit is at least 1 per minute' USING ERRCODE = '22023';
    END IF;
    IF p_requests IS NULL AND p_tokens IS NULL THEN
        DELETE FROM aegis.rate_limits r
            WHERE r.kind = 'Budget' AND r.namespace = p_namespace AND r.name = p_name;
        RETURN;
    END IF;
    INSERT INTO aegis.rate_limits AS r (kind, namespace, name, requests_per_minute,
                                        tokens_per_minute, updated_at)
        VALUES ('Budget', p_namespace, p_name, p_requests, p_tokens, now())
        ON CONFLICT (kind, namespace, name) DO UPDATE
            SET requests_per_minute = EXCLUDED.requests_per_minute,
                tokens_per_minute = EXCLUDED.tokens_per_minute, updated_at = EXCLUDED.updated_at
            WHERE (r.requests_per_minute, r.tokens_per_minute) IS DISTINCT FROM
                  (EXCLUDED.requests_per_minute, EXCLUDED.tokens_per_minute);
END
$fn$
"""

TENANT_FUNCTIONS = {
    "aegis.rate_lease(text, text, text, text, text, bigint, bigint, bigint, bigint, integer, "
    "boolean)": RATE_LEASE,
}
CONTROL_FUNCTIONS = {
    "aegis.set_rate_limits(text, text, text, bigint, bigint)": SET_RATE_LIMITS,
}
