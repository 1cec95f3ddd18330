"""Least-privilege grants for the shared ledger (PostgreSQL).

Three roles (names are the caller's; see docs/ledger.md):

- the **owner** (the operator's migration job): owns the tables and the
  SECURITY DEFINER functions, runs ``aegis ledger migrate``, sets operator
  limits, runs retention. It needs no grant: it owns everything.
- the **sidecar** role: EXECUTE on four functions and SELECT on the version
  table, nothing else. It cannot read, update or delete ledger rows, cannot
  insert rows except through ``aegis_ledger_write`` (which charges them to the
  caller's lease in the same transaction), cannot touch budget rows except
  through the lease functions (which never exceed the limit and never return
  settled money), and cannot raise a limit: the operator's ``budget_limits`` row
  caps whatever limit a sidecar passes.
- an optional **reader** role (dashboards, finance exports, a read-only
  operator): SELECT on the ledger and budget tables.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .migrate import VERSION_TABLE

SIDECAR_FUNCTIONS = (
    "aegis_ledger_write(text, json)",
    "aegis_lease_take(text, text, text, text, numeric, numeric, numeric, integer)",
    "aegis_lease_return(text, text, text, numeric, boolean)",
    "aegis_lease_takeover(text)",
)
READ_TABLES = ("ledger_entries", "budget_periods", "budget_leases", "budget_limits")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _quoted(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain role or schema name: {name!r}")
    return f'"{name}"'


def grant_statements(sidecar: str, reader: str | None = None, schema: str = "public") -> list[str]:
    """The GRANT statements, to run as the owner after ``aegis ledger migrate``.

    Idempotent (grants can be repeated); the roles must exist.
    """
    s, ns = _quoted(sidecar), _quoted(schema)
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {ns} FROM {s}",
        f"GRANT USAGE ON SCHEMA {ns} TO {s}",
        f"GRANT SELECT ON {ns}.{VERSION_TABLE} TO {s}",  # the schema check at start
    ]
    statements += [f"GRANT EXECUTE ON FUNCTION {ns}.{fn} TO {s}" for fn in SIDECAR_FUNCTIONS]
    if reader is not None:
        r = _quoted(reader)
        statements.append(f"GRANT USAGE ON SCHEMA {ns} TO {r}")
        statements += [f"GRANT SELECT ON {ns}.{table} TO {r}" for table in READ_TABLES]
    return statements


def grant_sql(sidecar: str, reader: str | None = None, schema: str = "public") -> str:
    """:func:`grant_statements` as a script for ``psql``."""
    header = "-- Aegis ledger: least-privilege grants (run as the schema owner).\n"
    return header + "".join(f"{s};\n" for s in grant_statements(sidecar, reader, schema))


async def apply_grants(
    connection: AsyncConnection, sidecar: str, reader: str | None = None, schema: str = "public"
) -> None:
    """Run :func:`grant_statements` on ``connection`` (as the owner)."""
    for statement in grant_statements(sidecar, reader, schema):
        await connection.execute(text(statement))
