"""The operator's control calls on the shared ledger (PostgreSQL, migration 0003).

The control role holds ``EXECUTE`` on four SECURITY DEFINER functions and nothing
else: it writes every budget's limit, provider and spending namespaces
(:func:`set_budget`, :func:`drop_budget`) and manages the per-namespace tenant
login roles (:func:`ensure_tenant`, :func:`drop_tenant`). A tenant's password is
sent as a SCRAM-SHA-256 verifier (:func:`scram_verifier`), so the server, its logs
and its statistics never see the password itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from ..contract import BudgetKey
from ..contract.money import quantize_usd

_SET_BUDGET = text(
    "SELECT aegis.set_budget(:scope, :namespace, :name, :provider, :limit, "
    "CAST(:spenders AS text[]))"
)
_DROP_BUDGET = text("SELECT aegis.drop_budget(:scope, :namespace, :name)")
_SET_RATE_LIMITS = text(
    "SELECT aegis.set_rate_limits(:scope, :namespace, :name, :requests, :tokens)"
)
_ENSURE_TENANT = text("SELECT aegis.ensure_tenant(:namespace, :verifier)")
_DROP_TENANT = text("SELECT aegis.drop_tenant(:namespace)")
_SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
ALL_NAMESPACES = "*"


async def set_budget(
    connection: AsyncConnection,
    budget: BudgetKey,
    *,
    provider: str,
    limit: Decimal,
    spenders: Iterable[str],
) -> None:
    """The budget's limit and provider, and the namespaces that may spend it
    (``*``: all); idempotent (an unchanged limit is not rewritten)."""
    await connection.execute(
        _SET_BUDGET,
        {
            "scope": budget.scope.value,
            "namespace": budget.namespace,
            "name": budget.name,
            "provider": provider,
            "limit": quantize_usd(limit),
            "spenders": sorted(set(spenders)),
        },
    )


async def drop_budget(connection: AsyncConnection, budget: BudgetKey) -> None:
    """No one may spend the budget any more; its periods and leases stay as history."""
    await connection.execute(
        _DROP_BUDGET,
        {"scope": budget.scope.value, "namespace": budget.namespace, "name": budget.name},
    )


async def set_rate_limits(
    connection: AsyncConnection,
    budget: BudgetKey,
    *,
    requests_per_minute: int | None,
    tokens_per_minute: int | None,
) -> None:
    """The budget's rate limits (both ``None``: none), shared by every sidecar that
    spends it; idempotent."""
    await connection.execute(
        _SET_RATE_LIMITS,
        {
            "scope": budget.scope.value,
            "namespace": budget.namespace,
            "name": budget.name,
            "requests": requests_per_minute,
            "tokens": tokens_per_minute,
        },
    )


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5802/7677),
    the form PostgreSQL stores; it accepts it in place of a password."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def new_password() -> str:
    """A tenant password: 256 random bits, URL-safe (it goes into a DSN)."""
    return secrets.token_urlsafe(32)


async def ensure_tenant(
    connection: AsyncConnection, namespace: str, password: str | None = None
) -> str:
    """The namespace's login role, created (a new one needs ``password``), its
    password replaced when given, registered and granted; returns its name."""
    verifier = None if password is None else scram_verifier(password)
    result = await connection.execute(
        _ENSURE_TENANT, {"namespace": namespace, "verifier": verifier}
    )
    return str(result.scalar_one())


async def drop_tenant(connection: AsyncConnection, namespace: str) -> None:
    """The namespace's role can no longer log in nor act as a tenant."""
    await connection.execute(_DROP_TENANT, {"namespace": namespace})


def tenant_url(base: str | URL, role: str, password: str) -> str:
    """``base`` (host, port, database, options; its credentials are dropped) with the
    tenant's role and password: the DSN a namespace's Secret carries."""
    url = make_url(base).set(username=role, password=password)
    return url.render_as_string(hide_password=False)
