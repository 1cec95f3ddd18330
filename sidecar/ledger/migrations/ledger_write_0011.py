"""``aegis.ledger_write(holder, rows)`` as migration 0011 creates it (history: a later
change of behaviour is a new migration with new text, never an edit here).

The function of 0009 reading its batch as ``jsonb``: the JSON array is parsed once,
and each row's 26 values are then read from the parsed value. On ``json``, every
``r->>N`` parsed the row's text again (26 parses per row), about 60% of
PostgreSQL's CPU for a batch. Same signature (``json`` in, so sidecars of any
version call it alike), same checks, same charges, same result.
"""

from __future__ import annotations

from .ledger_write_0009 import PERIOD_KEY
from .tenant_functions_0003 import HEADER

LEDGER_WRITE = f"""
CREATE OR REPLACE FUNCTION aegis.ledger_write(p_holder text, p_rows json)
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
    -- charges are summed per budget string before it is resolved to keys. The batch is
    -- parsed once, into jsonb: ->> on json would parse a row's text again for each of
    -- its 26 values.
    WITH src AS (
        SELECT r->>0 AS budgets, (r->>4) AS claimed,
               (r->>1)::varchar(128) AS request_id,
               (r->>2)::timestamptz AS created_at,
               (r->>3)::varchar(7) AS period,
               (r->>4)::varchar(63) AS namespace,
               (r->>5)::varchar(253) AS pod,
               (r->>6)::varchar(253) AS route,
               (r->>7)::varchar(63) AS rule,
               (r->>8)::varchar(16) AS arm,
               (r->>9)::varchar(63) AS provider,
               (r->>10)::varchar(128) AS model,
               (r->>11)::varchar(32) AS data_class,
               (r->>12)::integer AS tokens_in,
               (r->>13)::integer AS tokens_out,
               (r->>14)::numeric(18, 6) AS cost_usd,
               (r->>15)::integer AS latency_ms,
               (r->>16)::integer AS ttft_ms,
               (r->>17)::varchar(16) AS status,
               (r->>18)::smallint AS http_status,
               (r->>19)::varchar(64) AS fallback_reason,
               (r->>20)::smallint AS attempts,
               (r->>21)::varchar(32) AS declared_class,
               (r->>22)::varchar(255) AS pii_detectors,
               (r->>23)::varchar(16) AS privacy_action,
               (r->>24)::varchar(320) AS workload,
               (r->>25)::varchar(253) AS service_account
        FROM jsonb_array_elements(p_rows::jsonb) AS r
    ), ins AS (
        INSERT INTO aegis.ledger_entries (
            request_id, created_at, period, namespace, pod, route, rule, arm, provider, model,
            data_class, tokens_in, tokens_out, cost_usd, latency_ms, ttft_ms, status,
            http_status, fallback_reason, attempts, declared_class, pii_detectors,
            privacy_action, workload, service_account)
        SELECT request_id, created_at, period, namespace, pod, route, rule, arm, provider, model,
               data_class, tokens_in, tokens_out, cost_usd, latency_ms, ttft_ms, status,
               http_status, fallback_reason, attempts, declared_class, pii_detectors,
               privacy_action, workload, service_account
        FROM src
        ON CONFLICT (request_id, created_at) DO NOTHING
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
        -- "Scope/namespace/name@period": the budget's own period (a day, an ISO week or a
        -- month); without "@" (a spool from before 0009) or with a malformed one, the
        -- row's period.
        SELECT k.budget_scope AS s, k.budget_namespace AS n, k.budget_name AS m,
               CASE WHEN split_part(b.budget, '@', 2) ~ '{PERIOD_KEY}'
                    THEN split_part(b.budget, '@', 2) ELSE x.period END AS period,
               sum(x.amount) AS amount
        FROM summed x
        CROSS JOIN LATERAL unnest(string_to_array(x.budgets, ',')) AS b(budget)
        CROSS JOIN LATERAL aegis.budget_key(split_part(b.budget, '@', 1), v_tenant) AS k
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
