"""The shared ledger's tenancy for tests: a role acting for a namespace, and budgets
written as the operator writes them (their limit, provider and spenders).

Tests connect as the session's superuser; :func:`provision` maps it to one namespace
(``aegis.tenants``, as ``aegis.ensure_tenant`` would for a namespace's own role) so
that the tenant functions accept its holders ``<namespace>/<pod>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from aegis.sidecar.contract import BudgetKey, BudgetScope
from aegis.sidecar.ledger import control
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import migrate_async

Budget = tuple[str, str, str]  # name, provider, limit

_AS_TENANT = text(
    "INSERT INTO aegis.tenants (role_name, namespace, active, updated_at) "
    "VALUES (current_user, :namespace, true, now()) ON CONFLICT (role_name) DO UPDATE "
    "SET namespace = EXCLUDED.namespace, active = true"
)


def key(name: str, namespace: str = "ns") -> BudgetKey:
    return BudgetKey(BudgetScope.NAMESPACE, namespace, name)


async def set_budgets(
    url: str,
    namespace: str,
    budgets: Iterable[Budget],
    *,
    spenders: Iterable[str] | None = None,
) -> None:
    """Namespace budgets of ``namespace`` that its own namespace (or ``spenders``) spend."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for name, provider, limit in budgets:
                await control.set_budget(
                    connection,
                    key(name, namespace),
                    provider=provider,
                    limit=Decimal(limit),
                    spenders=[namespace] if spenders is None else spenders,
                )
    finally:
        await engine.dispose()


async def provision(
    url: str, namespace: str = "ns", budgets: Iterable[Budget] = (), *, migrate: bool = True
) -> None:
    """Migrate, act as ``namespace``'s tenant, and write ``budgets`` of it."""
    if migrate:
        await migrate_async(url)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(_AS_TENANT, {"namespace": namespace})
    finally:
        await engine.dispose()
    await set_budgets(url, namespace, budgets)


def provision_sync(url: str, namespace: str = "ns", budgets: Iterable[Budget] = ()) -> None:
    asyncio.run(provision(url, namespace, list(budgets)))


async def provision_config(url: str, document: Mapping[str, Any]) -> None:
    """:func:`provision` for a sidecar config document: its identity's namespace and
    its budgets, with their limits (as the operator would write them)."""
    namespace = document.get("identity", {}).get("namespace", "default")
    budgets = [(b["name"], b["provider"], str(b["limitUSD"])) for b in document["budgets"]]
    await provision(url, namespace, budgets)


async def tenant_url(url: str, namespace: str) -> str:
    """The namespace's own tenant role (made as the control role makes it) and its DSN:
    what the operator writes into the namespace's ledger Secret."""
    password = control.new_password()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            role = await control.ensure_tenant(connection, namespace, password)
    finally:
        await engine.dispose()
    return control.tenant_url(url, role, password)


def tenant_url_sync(url: str, namespace: str) -> str:
    return asyncio.run(tenant_url(url, namespace))
