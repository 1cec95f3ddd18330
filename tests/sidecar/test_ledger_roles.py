"""Least privilege on a real PostgreSQL: what each ledger role can and cannot do.

The owner migrates (it needs CREATEROLE for tenant roles) and grants the control and
reader roles; the control role creates a namespace's tenant role; the tenant spends
through the lease functions only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from aegis.sidecar.contract import BudgetKey, BudgetScope
from aegis.sidecar.ledger import control, leases
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import migrate_async
from aegis.sidecar.ledger.roles import apply_grants, grant_sql
from aegis.sidecar.ledger.spool import Spool
from aegis.sidecar.ledger.store import LedgerStore
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.ledger_helpers import record

pytestmark = pytest.mark.postgres

D = Decimal


@dataclass
class Roles:
    pg_url: str
    owner: str
    control: str
    reader: str
    namespace: str

    def url(self, role: str) -> str:
        return self.pg_url.replace("postgresql://postgres@", f"postgresql://{role}@")


@pytest.fixture
def roles(postgres: PostgresServer, pg_url: str) -> Iterator[Roles]:
    database = pg_url.rsplit("/", 1)[1]
    suffix = uuid.uuid4().hex[:8]
    owner, control_role, reader = (f"aegis_{k}_{suffix}" for k in ("owner", "control", "reader"))
    postgres.psql(f"CREATE ROLE {owner} LOGIN CREATEROLE")
    for role in (control_role, reader):
        postgres.psql(f"CREATE ROLE {role} LOGIN")
    postgres.psql(f"GRANT CREATE ON DATABASE {database} TO {owner}", database)
    postgres.psql(f"GRANT ALL ON SCHEMA public TO {owner}", database)
    namespace = f"team-{suffix}"
    yield Roles(pg_url, owner, control_role, reader, namespace)
    postgres.drop_database(database)
    tenant = "aegis_ns_" + namespace.replace("-", "_")
    for role in (tenant, control_role, reader, owner):
        postgres.psql(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
async def tenant(roles: Roles) -> AsyncIterator[tuple[Roles, str]]:
    """Migrated and granted by the owner; the namespace's tenant made by control."""
    await migrate_async(roles.url(roles.owner))
    engine = create_engine(roles.url(roles.owner), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await apply_grants(conn, control=roles.control, reader=roles.reader)
    await engine.dispose()
    engine = create_engine(roles.url(roles.control), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        role = await control.ensure_tenant(conn, roles.namespace, control.new_password())
        await control.set_budget(
            conn,
            BudgetKey(BudgetScope.NAMESPACE, roles.namespace, "dash"),
            provider="dashscope",
            limit=D(5),
            spenders=[roles.namespace],
        )
    await engine.dispose()
    yield roles, role


async def refused(url: str, statements: list[str]) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for sql in statements:
                with pytest.raises(DBAPIError, match="permission denied"):
                    await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def test_tenant_writes_rows_and_leases_and_nothing_else(
    tenant: tuple[Roles, str], tmp_path: Path
) -> None:
    roles, role = tenant
    ns = roles.namespace
    dash = BudgetKey(BudgetScope.NAMESPACE, ns, "dash")
    holder = f"{ns}/a"
    async with LedgerStore(
        roles.url(role),
        spool=Spool(tmp_path / "spool"),
        holder=holder,
        charge_to=lambda _: dash.encoded,  # what a book with this one budget answers
    ) as store:
        async with store.database.connect() as conn:
            grant = await leases.take(
                conn, budget=dash, period="2026-11", holder=holder, want=D(100)
            )
            assert (grant.granted, grant.limit) == (D(5), D(5))  # the operator's limit
        store.append(record(1, namespace=ns, cost_usd=D("0.5")))
        await store.flush()
        assert store.rows_written == 1
        async with store.database.connect() as conn:
            back = await leases.give_back(
                conn, budget=dash, period="2026-11", holder=holder, amount=D(10), close=True
            )
            assert back.returned == D("4.5")
            assert await leases.takeover(conn, holder) == []
    await refused(
        roles.url(role),
        [
            "SELECT * FROM aegis.ledger_entries",
            "UPDATE aegis.ledger_entries SET cost_usd = 0",
            "DELETE FROM aegis.ledger_entries",
            "INSERT INTO aegis.ledger_entries (request_id) VALUES ('x')",
            "SELECT * FROM aegis.budget_limits",
            "UPDATE aegis.budget_limits SET limit_usd = 1000",
            "INSERT INTO aegis.budget_spenders VALUES ('Namespace', 'x', 'dash', '*')",
            "UPDATE aegis.budget_periods SET limit_usd = 1000, committed_usd = 0",
            "DELETE FROM aegis.budget_leases",
            "INSERT INTO aegis.tenants VALUES ('postgres', 'other', true, now())",
            "SELECT aegis.lease_settle('Namespace', 'x', 'dash', '2026-11', 'x/a', -5, 'x')",
            f"SELECT aegis.set_budget('Namespace', '{ns}', 'dash', 'dashscope', 1e6, '{{*}}')",
            "SELECT aegis.ensure_tenant('other', NULL)",
            "TRUNCATE aegis.ledger_entries",
            "CREATE TABLE aegis.evil (x int)",
            "CREATE TABLE public.evil (x int)",
            "CREATE FUNCTION public.make_interval(secs integer) RETURNS interval "
            "LANGUAGE sql AS 'SELECT interval ''1 s'''",
        ],
    )


async def test_control_writes_budgets_and_tenants_but_reads_nothing(
    tenant: tuple[Roles, str],
) -> None:
    roles, _ = tenant
    await refused(
        roles.url(roles.control),
        [
            "SELECT * FROM aegis.ledger_entries",
            "SELECT * FROM aegis.budget_limits",
            "DELETE FROM aegis.budget_periods",
            "SELECT * FROM aegis.lease_takeover('x/a')",
            "CREATE TABLE aegis.evil (x int)",
        ],
    )


async def test_reader_reads_but_cannot_write(tenant: tuple[Roles, str]) -> None:
    roles, _ = tenant
    engine = create_engine(roles.url(roles.reader), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT count(*) FROM aegis.budget_limits"))
            assert rows.scalar() == 1
    finally:
        await engine.dispose()
    await refused(
        roles.url(roles.reader),
        [
            "UPDATE aegis.budget_limits SET limit_usd = 1",
            "SELECT * FROM aegis.lease_takeover('x/a')",
            "SELECT aegis.set_budget('Namespace', 'x', 'b', 'p', 1, '{*}')",
        ],
    )


async def test_a_foreign_role_of_the_tenant_name_is_never_taken_over(
    roles: Roles, postgres: PostgresServer
) -> None:
    await migrate_async(roles.url(roles.owner))
    squatter = "aegis_ns_" + roles.namespace.replace("-", "_")
    postgres.psql(f"CREATE ROLE {squatter} LOGIN")
    engine = create_engine(roles.url(roles.owner), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError, match="is not the Aegis tenant"):
                await control.ensure_tenant(conn, roles.namespace, control.new_password())
            with pytest.raises(DBAPIError, match="SCRAM-SHA-256 verifier"):
                await conn.execute(text("SELECT aegis.ensure_tenant('x', 'plain-password')"))
    finally:
        await engine.dispose()


def test_grant_sql_is_a_script_and_refuses_odd_names() -> None:
    script = grant_sql("aegis_control", "aegis_reader")
    assert "GRANT EXECUTE ON FUNCTION aegis.set_budget(" in script
    assert 'GRANT SELECT ON aegis.ledger_entries TO "aegis_reader"' in script
    assert "UPDATE" not in script and "DELETE" not in script
    with pytest.raises(ValueError, match="plain role"):
        grant_sql('x"; DROP TABLE ledger_entries; --')


def test_scram_verifier_passes_the_rfc_7677_exchange() -> None:
    """RFC 7677, section 3: user "user", password "pencil": the client proof and the
    server signature of its exchange check out against our StoredKey and ServerKey."""
    salt = "W22ZaJ0SNY7soEsUEjb6gQ=="
    verifier = control.scram_verifier("pencil", base64.b64decode(salt))
    _, iterations_salt, keys = verifier.split("$")
    assert iterations_salt == f"4096:{salt}"
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s={salt},i=4096,c=biws,r={nonce}".encode()
    signature = hmac.new(server, auth, "sha256").digest()
    assert base64.b64encode(signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.new(stored, auth, "sha256").digest()
    client_key = bytes(p ^ c for p, c in zip(proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored
