"""Every served namespace gets a ledger role of its own, delivered as its Secret.

On the shared PostgreSQL ledger a namespace's sidecars act as that namespace's
*tenant* role (``aegis_ns_<namespace>``): the database lets them spend only the
budgets granted to the namespace and write ledger rows of it only. When a route
is reconciled, the operator (with its control DSN, and ``--tenant-secret NAME``)
makes sure its namespace has that role and the Secret ``NAME`` holding the role's
DSN, which the injector hands to the sidecars (``secretKeyRef``):

- no Secret: a fresh password (256 random bits), the role created or its password
  replaced (sent as a SCRAM verifier, never in clear), then the Secret created,
  labelled as the operator's;
- the operator's Secret: the role is made sure of without a new password
  (``aegis.ensure_tenant(ns, NULL)``); if the role is gone (a new database) the
  password is rotated;
- a Secret of that name that is not the operator's (a DSN someone wrote, e.g. a
  SQLite file for evaluation): left alone.

Rotation: delete the Secret; the next reconcile (at the latest the resync
interval) writes a new password. Pods keep the DSN they started with until they
restart (an environment variable), and their open connections keep working.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import SQLAlchemyError

from aegis.sidecar.ledger import control

from ..api import naming
from ..kube import KubeError, Secret
from .context import Context

log = logging.getLogger(__name__)

ROLE_ANNOTATION = "aegis.io/ledger-role"
DSN_KEY = "dsn"
_TIMEOUT = 15.0


def _secret(name: str, namespace: str, role: str, dsn: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {naming.MANAGED_BY_LABEL: naming.MANAGED_BY},
            "annotations": {ROLE_ANNOTATION: role},
        },
        "type": "Opaque",
        "stringData": {DSN_KEY: dsn},
    }


def _ours(secret: dict[str, object]) -> bool:
    meta = secret.get("metadata")
    labels = (meta.get("labels") if isinstance(meta, dict) else None) or {}
    return isinstance(labels, dict) and labels.get(naming.MANAGED_BY_LABEL) == naming.MANAGED_BY


async def _ensure_role(ctx: Context, namespace: str, password: str | None) -> str:
    assert ctx.control is not None
    async with asyncio.timeout(_TIMEOUT), ctx.control.connect() as connection:
        return await control.ensure_tenant(connection, namespace, password)


async def ensure_namespace_ledger(ctx: Context, namespace: str) -> None:
    """The namespace's tenant role and its Secret (a no-op when tenants are not the
    operator's to manage). Failures are logged: the route itself still renders, and
    its sidecars fail closed without a ledger."""
    name, url = ctx.options.tenant_secret, ctx.options.tenant_url
    if name is None or ctx.control is None:
        return
    async with ctx.locks.hold(("tenant", namespace)):
        try:
            found = await ctx.kube.get(Secret, name, namespace=namespace)
            if found is not None and not _ours(found):
                log.info("Secret %s/%s is not the operator's: left as it is", namespace, name)
                return
            if found is not None:
                try:
                    await _ensure_role(ctx, namespace, None)
                    return
                except SQLAlchemyError as error:
                    if "needs a password" not in str(error):
                        raise
                    log.warning("ledger role of namespace %s is gone: new password", namespace)
            password = control.new_password()
            role = await _ensure_role(ctx, namespace, password)
            dsn = control.tenant_url(url or ctx.control.url, role, password)
            body = _secret(name, namespace, role, dsn)
            if found is None:
                await ctx.kube.create(Secret, body)
            else:
                await ctx.kube.replace(Secret, {**body, "metadata": found["metadata"]})
            log.info("namespace %s: ledger role %s in Secret %s", namespace, role, name)
        except (SQLAlchemyError, OSError, TimeoutError, KubeError):
            log.exception("namespace %s: could not make its ledger role and Secret", namespace)
