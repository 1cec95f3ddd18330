"""Each namespace with an LLMRoute gets a ledger role of its own, in its ledger Secret."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aegis.sidecar.ledger.db import create_engine
from tests.controlplane.kube import Kube
from tests.operator.harness import OperatorProcess, get, poll, secret
from tests.operator.test_routes import origin_route

pytestmark = [pytest.mark.kube, pytest.mark.postgres]


def ledger_secret(kube: Kube, ns: str) -> dict[str, Any] | None:
    return get(kube, "secret", "aegis-ledger", ns)


def dsn_of(found: dict[str, Any]) -> str:
    return base64.b64decode(found["data"]["dsn"]).decode()


def acts_as(dsn: str) -> str:
    """The namespace the database says this DSN's role acts for."""

    async def ask() -> str:
        engine = create_engine(dsn)
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT * FROM aegis.lease_takeover('x')"))
        except Exception as refused:  # a holder outside its namespace: it names it
            return str(refused).split("holder of namespace ", 1)[1].split(" ", 1)[0]
        finally:
            await engine.dispose()
        raise AssertionError("a holder outside every namespace was accepted")

    return asyncio.run(ask())


def test_a_served_namespace_gets_its_own_ledger_role_and_secret(
    kube: Kube, ns: str, operator: OperatorProcess
) -> None:
    kube.apply(origin_route(), ns)
    found = poll(lambda: ledger_secret(kube, ns), timeout=30, what="the ledger Secret")
    assert found["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aegis-operator"
    role = "aegis_ns_" + ns.replace("-", "_")
    assert found["metadata"]["annotations"]["aegis.io/ledger-role"] == role
    dsn = dsn_of(found)
    assert make_url(dsn).username == role and make_url(dsn).password
    assert acts_as(dsn) == ns

    # Rotation: delete the Secret; the resync writes a new password for the same role.
    kube.kubectl("delete", "secret", "aegis-ledger", "-n", ns)
    again = poll(lambda: ledger_secret(kube, ns), timeout=30, what="the Secret rewritten")
    assert make_url(dsn_of(again)).username == role
    assert make_url(dsn_of(again)).password != make_url(dsn).password


def test_a_ledger_secret_someone_else_wrote_is_left_alone(
    kube: Kube, ns: str, operator: OperatorProcess
) -> None:
    kube.apply(secret("aegis-ledger", dsn="sqlite+aiosqlite:////var/lib/aegis/ledger.db"), ns)
    kube.apply(origin_route(), ns)
    # The namespace's ledger is seen to before the route is rendered: once the route has
    # its config hash, the operator has looked at this Secret.
    poll(
        lambda: ((get(kube, "llmroute", "rag-api", ns) or {}).get("status") or {}).get(
            "configHash"
        ),
        what="the route rendered",
    )
    found = ledger_secret(kube, ns)
    assert found is not None
    assert dsn_of(found) == "sqlite+aiosqlite:////var/lib/aegis/ledger.db"
    assert (
        "labels" not in found["metadata"]
        or "app.kubernetes.io/managed-by" not in (found["metadata"]["labels"])
    )
