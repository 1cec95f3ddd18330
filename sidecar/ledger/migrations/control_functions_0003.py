"""The functions the operator's control role calls, as migration 0003 creates them
(history: later changes are new migrations).

- ``aegis.set_budget``: the limit, provider and spending namespaces of one budget,
  written for every ``LLMBudget``; a budget of the same name keyed before 0003
  (namespace unknown, ``''``) is adopted by the first namespaced budget of that name,
  so its history and this period's commitments carry over.
- ``aegis.drop_budget``: the budget can no longer be spent (its periods and leases
  stay as history).
- ``aegis.ensure_tenant``: the login role of one namespace, created (or its password
  replaced) from a SCRAM-SHA-256 verifier, so the password itself never reaches the
  server; registered in ``aegis.tenants`` and granted the tenant functions only. A
  role of that name that is not the namespace's tenant is never touched.
- ``aegis.drop_tenant``: the role can no longer log in or act as a tenant.

They run as the owner (which needs ``CREATEROLE`` for tenants); the control role
needs ``EXECUTE`` on them and nothing else.
"""

from __future__ import annotations

from .tenant_functions_0003 import HEADER, TENANT_FUNCTIONS

NAMESPACE_PATTERN = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
VERIFIER_PATTERN = r"^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$"

CHECK_KEY = f"""
    IF p_scope IS NULL OR p_namespace IS NULL OR p_name IS NULL
       OR p_scope NOT IN ('Namespace', 'Cluster')
       OR (p_scope = 'Namespace') <> (p_namespace ~ '{NAMESPACE_PATTERN}')
       OR (p_scope = 'Cluster') <> (p_namespace = '')
       OR p_name !~ '{NAMESPACE_PATTERN}' THEN
        RAISE EXCEPTION 'not a budget key: %/%/%', p_scope, p_namespace, p_name
            USING ERRCODE = '22023';
    END IF;"""

SET_BUDGET = f"""
CREATE FUNCTION aegis.set_budget(
    p_scope text, p_namespace text, p_name text, p_provider text, p_limit numeric,
    p_spenders text[])
RETURNS void
{HEADER} AS $fn$
DECLARE
    v_spender text;
BEGIN
{CHECK_KEY}
    IF p_limit IS NULL OR p_limit < 0 OR p_provider !~ '{NAMESPACE_PATTERN}' THEN
        RAISE EXCEPTION 'a budget needs a provider and a limit >= 0' USING ERRCODE = '22023';
    END IF;
    FOREACH v_spender IN ARRAY COALESCE(p_spenders, '{{}}'::text[]) LOOP
        IF v_spender <> '*' AND v_spender !~ '{NAMESPACE_PATTERN}' THEN
            RAISE EXCEPTION 'not a namespace: %', v_spender USING ERRCODE = '22023';
        END IF;
    END LOOP;
    INSERT INTO aegis.budget_limits AS o
        (budget_scope, budget_namespace, budget_name, provider, limit_usd, updated_at)
        VALUES (p_scope, p_namespace, p_name, p_provider, p_limit, now())
        ON CONFLICT (budget_scope, budget_namespace, budget_name) DO UPDATE
            SET provider = EXCLUDED.provider, limit_usd = EXCLUDED.limit_usd,
                updated_at = EXCLUDED.updated_at
            WHERE (o.provider, o.limit_usd) IS DISTINCT FROM
                  (EXCLUDED.provider, EXCLUDED.limit_usd);
    DELETE FROM aegis.budget_spenders s
        WHERE s.budget_scope = p_scope AND s.budget_namespace = p_namespace
          AND s.budget_name = p_name AND s.namespace <> ALL (COALESCE(p_spenders, '{{}}'));
    INSERT INTO aegis.budget_spenders (budget_scope, budget_namespace, budget_name, namespace)
        SELECT p_scope, p_namespace, p_name, x FROM unnest(p_spenders) AS x
        ON CONFLICT DO NOTHING;
    IF p_scope = 'Namespace' THEN
        UPDATE aegis.budget_periods b SET budget_namespace = p_namespace
            WHERE b.budget_scope = 'Namespace' AND b.budget_namespace = ''
              AND b.budget_name = p_name
              AND NOT EXISTS (
                  SELECT 1 FROM aegis.budget_periods o
                  WHERE o.budget_scope = 'Namespace' AND o.budget_namespace = p_namespace
                    AND o.budget_name = p_name AND o.period = b.period);
        DELETE FROM aegis.budget_limits o
            WHERE o.budget_scope = 'Namespace' AND o.budget_namespace = ''
              AND o.budget_name = p_name;
    END IF;
END
$fn$
"""

DROP_BUDGET = f"""
CREATE FUNCTION aegis.drop_budget(p_scope text, p_namespace text, p_name text)
RETURNS void
{HEADER} AS $fn$
BEGIN
    DELETE FROM aegis.budget_limits o
        WHERE o.budget_scope = p_scope AND o.budget_namespace = p_namespace
          AND o.budget_name = p_name;
END
$fn$
"""

# Role names are global to the PostgreSQL cluster: aegis_ns_<namespace>, '-' as '_'
# (namespaces hold no '_', so the mapping is one to one), a hash when too long.
TENANT_ROLE_NAME = f"""
CREATE FUNCTION aegis.tenant_role_name(p_namespace text) RETURNS text
IMMUTABLE {HEADER} AS $fn$
DECLARE
    v_base text := replace(p_namespace, '-', '_');
BEGIN
    IF length(v_base) <= 54 THEN
        RETURN 'aegis_ns_' || v_base;
    END IF;
    RETURN 'aegis_ns_' || left(v_base, 45) || '_' || left(md5(p_namespace), 8);
END
$fn$
"""


def ensure_tenant(version_table: str) -> str:
    """``aegis.ensure_tenant``; ``version_table`` is substituted when the migration
    runs (the qualified name of Alembic's version table, which tenants may read)."""
    grants = ", ".join(TENANT_FUNCTIONS)
    return f"""
CREATE FUNCTION aegis.ensure_tenant(p_namespace text, p_verifier text)
RETURNS text
{HEADER} AS $fn$
DECLARE
    v_role text;
    v_registered text;
    v_exists boolean;
BEGIN
    IF p_namespace IS NULL OR p_namespace !~ '{NAMESPACE_PATTERN}' THEN
        RAISE EXCEPTION 'not a namespace: %', p_namespace USING ERRCODE = '22023';
    END IF;
    IF p_verifier IS NOT NULL AND p_verifier !~ '{VERIFIER_PATTERN}' THEN
        RAISE EXCEPTION 'the password must be given as a SCRAM-SHA-256 verifier'
            USING ERRCODE = '22023';
    END IF;
    v_role := aegis.tenant_role_name(p_namespace);
    SELECT t.namespace INTO v_registered FROM aegis.tenants t WHERE t.role_name = v_role;
    SELECT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = v_role) INTO v_exists;
    IF v_exists AND v_registered IS DISTINCT FROM p_namespace THEN
        RAISE EXCEPTION 'role % exists and is not the Aegis tenant of namespace %',
            v_role, p_namespace USING ERRCODE = '42710';
    END IF;
    IF NOT v_exists THEN
        IF p_verifier IS NULL THEN
            RAISE EXCEPTION 'a new tenant role needs a password' USING ERRCODE = '22023';
        END IF;
        EXECUTE format('CREATE ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                       'NOINHERIT NOREPLICATION NOBYPASSRLS PASSWORD %L', v_role, p_verifier);
    ELSIF p_verifier IS NOT NULL THEN
        EXECUTE format('ALTER ROLE %I WITH LOGIN PASSWORD %L', v_role, p_verifier);
    ELSE
        EXECUTE format('ALTER ROLE %I WITH LOGIN', v_role);
    END IF;
    INSERT INTO aegis.tenants AS t (role_name, namespace, active, updated_at)
        VALUES (v_role, p_namespace, true, now())
        ON CONFLICT (role_name) DO UPDATE SET active = true, updated_at = now();
    EXECUTE format('GRANT USAGE ON SCHEMA aegis TO %I', v_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION {grants} TO %I', v_role);
    EXECUTE format('GRANT SELECT ON {version_table} TO %I', v_role);
    RETURN v_role;
END
$fn$
"""


DROP_TENANT = f"""
CREATE FUNCTION aegis.drop_tenant(p_namespace text)
RETURNS void
{HEADER} AS $fn$
DECLARE
    v_role text;
BEGIN
    UPDATE aegis.tenants t SET active = false, updated_at = now()
        WHERE t.namespace = p_namespace RETURNING t.role_name INTO v_role;
    IF v_role IS NOT NULL THEN
        EXECUTE format('ALTER ROLE %I WITH NOLOGIN', v_role);
    END IF;
END
$fn$
"""

CONTROL_SIGNATURES = (
    "aegis.set_budget(text, text, text, text, numeric, text[])",
    "aegis.drop_budget(text, text, text)",
    "aegis.ensure_tenant(text, text)",
    "aegis.drop_tenant(text)",
)
STATIC_FUNCTIONS = {
    "aegis.set_budget(text, text, text, text, numeric, text[])": SET_BUDGET,
    "aegis.drop_budget(text, text, text)": DROP_BUDGET,
    "aegis.tenant_role_name(text)": TENANT_ROLE_NAME,
    "aegis.drop_tenant(text)": DROP_TENANT,
}
