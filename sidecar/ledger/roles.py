"""Least-privilege roles of the shared ledger (PostgreSQL, migration 0003).

- the **owner** (the migration job): owns schema ``aegis``, its tables and its
  SECURITY DEFINER functions; runs ``aegis ledger migrate`` and retention. It needs
  ``CREATE`` on the database (for the schema) and ``CREATEROLE`` (tenant roles are
  created by ``aegis.ensure_tenant``, which runs as the owner).
- one **tenant** role per namespace (``aegis_ns_<namespace>``), created by
  ``aegis.ensure_tenant`` and delivered to that namespace as its ledger Secret:
  ``EXECUTE`` on ``aegis.ledger_write``, ``aegis.lease_take``, ``aegis.lease_return``,
  ``aegis.lease_takeover`` and ``aegis.ledger_identity`` (0005: the id a spool is
  bound to; 0008: the take that reports spare money and the call time),
  ``SELECT`` on the version table, nothing else. The
  functions act only for the caller's namespace (``session_user`` in
  ``aegis.tenants``).
- the **control** role (the operator, :mod:`.control`): ``EXECUTE`` on
  ``aegis.set_budget``, ``aegis.drop_budget``, ``aegis.ensure_tenant``,
  ``aegis.drop_tenant`` and ``aegis.ensure_partitions`` (0007: the ledger's months
  ahead, on the operator's timer); no table privilege.
- the **reader** role (the operator's budget status and rollout analysis,
  dashboards, finance): ``SELECT`` on the ledger and budget tables.

:func:`grant_statements` gives the control and reader roles their rights (the
migration job runs them with ``aegis ledger migrate --control … --reader …``).
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .models import SCHEMA
from .revision import VERSION_TABLE

TENANT_FUNCTIONS = (
    "ledger_write(text, json)",
    "ledger_write(text, json, text)",
    "ledger_identity()",
    "lease_take(text, text, text, text, text, numeric, numeric, integer)",
    "lease_take(text, text, text, text, text, numeric, numeric, integer, numeric, integer)",
    "lease_return(text, text, text, text, text, numeric, boolean)",
    "lease_takeover(text)",
    "rate_lease(text, text, text, text, text, bigint, bigint, bigint, bigint, integer, boolean)",
)
CONTROL_FUNCTIONS = (
    "set_budget(text, text, text, text, numeric, text[])",
    "drop_budget(text, text, text)",
    "ensure_tenant(text, text)",
    "drop_tenant(text)",
    "set_rate_limits(text, text, text, bigint, bigint)",
    "ensure_partitions(integer, timestamp with time zone)",
)
READ_TABLES = (
    "ledger_entries",
    "budget_periods",
    "budget_leases",
    "budget_limits",
    "budget_spenders",
    "ledger_identity",
    "rate_limits",
    "rate_pools",
    "rate_leases",
    "ledger_summary",
)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _quoted(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain role name: {name!r}")
    return f'"{name}"'


def grant_statements(control: str | None = None, reader: str | None = None) -> list[str]:
    """The GRANT statements, to run as the owner after ``aegis ledger migrate``.

    Idempotent (grants can be repeated); the roles must exist.
    """
    statements: list[str] = []
    if control is not None:
        c = _quoted(control)
        statements.append(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {c}")
        statements += [f"GRANT EXECUTE ON FUNCTION {SCHEMA}.{f} TO {c}" for f in CONTROL_FUNCTIONS]
    if reader is not None:
        r = _quoted(reader)
        statements.append(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {r}")
        statements += [f"GRANT SELECT ON {SCHEMA}.{table} TO {r}" for table in READ_TABLES]
        statements.append(f"GRANT SELECT ON {VERSION_TABLE} TO {r}")
    return statements


def grant_sql(control: str | None = None, reader: str | None = None) -> str:
    """:func:`grant_statements` as a script for ``psql``."""
    header = "-- Aegis ledger: least-privilege grants (run as the schema owner).\n"
    return header + "".join(f"{s};\n" for s in grant_statements(control, reader))


async def apply_grants(
    connection: AsyncConnection, control: str | None = None, reader: str | None = None
) -> None:
    """Run :func:`grant_statements` on ``connection`` (as the owner)."""
    for statement in grant_statements(control, reader):
        await connection.execute(text(statement))
