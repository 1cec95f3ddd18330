"""The ledger's monthly partitions, its summary table and the ``aegis.ledger_write``
that writes through them, as migration 0007 creates them (history: a later change is a
new migration with new text, never an edit here).

- ``aegis.ledger_entries`` is partitioned by range of ``created_at``, one partition per
  calendar month in UTC (``ledger_entries_YYYY_MM``), plus ``ledger_entries_default``,
  a safety net for a row whose month has no partition (so an insert never fails).
- ``aegis.ledger_partition(month)`` creates one month's partition (moving that month's
  rows out of the default partition); ``aegis.ensure_partitions(months_ahead, at)``
  empties the default partition into partitions of their own and creates the current
  month's and the next ``months_ahead`` (the migration job and the operator's timer
  call it; the operator through its control role).
- ``aegis.ledger_summary``: requests, errors, refusals, tokens and cost per period,
  namespace, route, provider and model, kept by a statement-level trigger on the
  ledger in the same transaction as the insert (only rows really inserted count).
- ``aegis.ledger_write``: the text of 0006 with the conflict target ``(request_id,
  created_at)`` (a unique key of a partitioned table includes its partition key; a
  replayed row carries its original ``created_at``, so a replay still inserts nothing).
"""

from __future__ import annotations

from .tenant_functions_0003 import HEADER

#: aegis.ledger_write(text, json) of 0006 (ledger_write_0006) with the conflict target of
#: the partitioned table.
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
    -- charges are summed per budget string before it is resolved to keys.
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
        FROM json_array_elements(p_rows) AS r
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

# Bounds are written as ISO literals with an explicit UTC offset, so that neither the
# session's TimeZone nor its DateStyle changes what they mean.
LEDGER_PARTITION = f"""
CREATE FUNCTION aegis.ledger_partition(p_month date)
RETURNS boolean
{HEADER} AS $fn$
DECLARE
    v_start timestamp := pg_catalog.date_trunc('month', p_month::timestamp);
    v_name text := 'ledger_entries_' || pg_catalog.to_char(v_start, 'YYYY_MM');
    v_from text := pg_catalog.to_char(v_start, 'YYYY-MM-DD') || ' 00:00:00+00';
    v_to text := pg_catalog.to_char(v_start + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00';
BEGIN
    IF pg_catalog.to_regclass('aegis.' || v_name) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Built beside the ledger and attached: attaching locks the ledger less than
    -- CREATE TABLE ... PARTITION OF would (inserts go on), and the month's rows that
    -- waited in the default partition move in first.
    EXECUTE pg_catalog.format(
        'CREATE TABLE aegis.%I (LIKE aegis.ledger_entries INCLUDING DEFAULTS '
        'INCLUDING CONSTRAINTS INCLUDING STORAGE)', v_name);
    EXECUTE pg_catalog.format(
        'WITH moved AS (DELETE FROM aegis.ledger_entries_default '
        'WHERE created_at >= %L AND created_at < %L RETURNING *) '
        'INSERT INTO aegis.%I SELECT * FROM moved', v_from, v_to, v_name);
    EXECUTE pg_catalog.format(
        'ALTER TABLE aegis.ledger_entries ATTACH PARTITION aegis.%I '
        'FOR VALUES FROM (%L) TO (%L)', v_name, v_from, v_to);
    RETURN true;
END
$fn$
"""

ENSURE_PARTITIONS = f"""
CREATE FUNCTION aegis.ensure_partitions(p_months_ahead integer DEFAULT 3,
                                        p_at timestamptz DEFAULT now())
RETURNS integer
{HEADER} AS $fn$
DECLARE
    v_this date := pg_catalog.date_trunc('month', p_at AT TIME ZONE 'UTC')::date;
    v_month date;
    v_created integer := 0;
BEGIN
    IF p_months_ahead IS NULL OR p_months_ahead < 0 OR p_months_ahead > 24 OR p_at IS NULL THEN
        RAISE EXCEPTION 'aegis.ensure_partitions: months ahead 0..24 and a time'
            USING ERRCODE = '22023';
    END IF;
    -- One caller at a time (the migration job and the operator's timer may meet).
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('aegis.ensure_partitions'));
    FOR v_month IN
        SELECT DISTINCT pg_catalog.date_trunc('month', d.created_at AT TIME ZONE 'UTC')::date
        FROM aegis.ledger_entries_default d ORDER BY 1 LOOP
        IF aegis.ledger_partition(v_month) THEN
            v_created := v_created + 1;
        END IF;
    END LOOP;
    FOR i IN 0 .. p_months_ahead LOOP
        IF aegis.ledger_partition((v_this + pg_catalog.make_interval(months => i))::date) THEN
            v_created := v_created + 1;
        END IF;
    END LOOP;
    RETURN v_created;
END
$fn$
"""

SUMMARY_KEY = "period, namespace, route, provider, model"

# Rows are upserted in key order, so two batches never wait for each other in a cycle.
SUMMARY_ADD = f"""
CREATE FUNCTION aegis.ledger_summary_add()
RETURNS trigger
{HEADER} AS $fn$
BEGIN
    INSERT INTO aegis.ledger_summary AS s
        ({SUMMARY_KEY}, requests, errors, refused, tokens_in, tokens_out, cost_usd)
    SELECT {SUMMARY_KEY}, count(*), count(*) FILTER (WHERE n.status = 'error'),
           count(*) FILTER (WHERE n.status = 'refused'), sum(n.tokens_in), sum(n.tokens_out),
           sum(n.cost_usd)
    FROM inserted n
    GROUP BY {SUMMARY_KEY}
    ORDER BY {SUMMARY_KEY}
    ON CONFLICT ({SUMMARY_KEY}) DO UPDATE
        SET requests = s.requests + EXCLUDED.requests, errors = s.errors + EXCLUDED.errors,
            refused = s.refused + EXCLUDED.refused,
            tokens_in = s.tokens_in + EXCLUDED.tokens_in,
            tokens_out = s.tokens_out + EXCLUDED.tokens_out,
            cost_usd = s.cost_usd + EXCLUDED.cost_usd;
    RETURN NULL;
END
$fn$
"""

SUMMARY_TRIGGER = """
CREATE TRIGGER ledger_summary_add AFTER INSERT ON aegis.ledger_entries
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION aegis.ledger_summary_add()
"""

#: SQLite (standalone): the same totals, one row at a time.
SQLITE_SUMMARY_TRIGGER = f"""
CREATE TRIGGER ledger_summary_add AFTER INSERT ON ledger_entries
BEGIN
    INSERT INTO ledger_summary
        ({SUMMARY_KEY}, requests, errors, refused, tokens_in, tokens_out, cost_usd)
    VALUES (NEW.period, NEW.namespace, NEW.route, NEW.provider, NEW.model, 1,
            NEW.status = 'error', NEW.status = 'refused', NEW.tokens_in, NEW.tokens_out,
            NEW.cost_usd)
    ON CONFLICT ({SUMMARY_KEY}) DO UPDATE
        SET requests = requests + excluded.requests, errors = errors + excluded.errors,
            refused = refused + excluded.refused, tokens_in = tokens_in + excluded.tokens_in,
            tokens_out = tokens_out + excluded.tokens_out,
            cost_usd = cost_usd + excluded.cost_usd;
END
"""

#: What the summary holds for rows already in the ledger (both backends).
SUMMARY_BACKFILL = f"""
INSERT INTO {{table}}
    ({SUMMARY_KEY}, requests, errors, refused, tokens_in, tokens_out, cost_usd)
SELECT {SUMMARY_KEY}, count(*), sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END),
       sum(CASE WHEN status = 'refused' THEN 1 ELSE 0 END), sum(tokens_in), sum(tokens_out),
       sum(cost_usd)
FROM {{source}}
GROUP BY {SUMMARY_KEY}
"""

FUNCTIONS = {
    "aegis.ledger_partition(date)": LEDGER_PARTITION,
    "aegis.ensure_partitions(integer, timestamp with time zone)": ENSURE_PARTITIONS,
    "aegis.ledger_summary_add()": SUMMARY_ADD,
}

#: The migration's own call: the current month and the three after it.
ENSURE_PARTITIONS_AHEAD = "SELECT aegis.ensure_partitions(3)"
