"""Attribution on ledger rows: the workload and ServiceAccount the injector hands the
sidecar reach every row, on SQLite and through a tenant's ``aegis.ledger_write`` on
PostgreSQL; rows spooled by earlier versions (without those fields) still replay."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable

import aiohttp
import pytest
from alembic import command
from sqlalchemy.engine import Connection

from aegis.sidecar.ledger.database import PostgresConnection, open_database
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import alembic_config, head_revision, migrate_async
from aegis.sidecar.ledger.models import COLUMNS
from aegis.sidecar.ledger.report import iter_entries
from aegis.sidecar.ledger.spool import decode, encode, encode_body
from aegis.sidecar.ledger.store import LedgerStore
from aegis.sidecar.ledger.writes import write_postgres
from aegis.sidecar.runtime.process import SERVICE_ACCOUNT_ENV, WORKLOAD_ENV
from tests.sidecar.conftest import SidecarFactory
from tests.sidecar.ledger_helpers import record
from tests.sidecar.shared_helpers import fetch
from tests.sidecar.tenancy import tenant_url

ATTRIBUTION = {"workload": "Deployment/shop", "service_account": "shop-sa"}
PRIVACY = {"declared_class": "internal", "pii_detectors": "email", "privacy_action": "masked"}


def fresh_namespace() -> str:
    """Tenant roles are global to the server: a namespace of this test's own."""
    return f"attr-{uuid.uuid4().hex[:10]}"


def older_body(i: int, dropped: int, namespace: str = "ns") -> bytes:
    """A row as a sidecar ``dropped`` columns older wrote it (its JSON array is shorter)."""
    row = record(i, namespace=namespace, **PRIVACY, **ATTRIBUTION)
    values = json.loads(encode_body(row, ""))
    return json.dumps(values[: len(values) - dropped], separators=(",", ":")).encode()


def test_older_spool_lines_decode_with_the_new_columns_empty() -> None:
    current = decode(encode(1, encode_body(record(1, **PRIVACY, **ATTRIBUTION), "")))
    assert current is not None
    assert (current.record.workload, current.record.service_account) == (
        "Deployment/shop",
        "shop-sa",
    )
    before_attribution = decode(encode(2, older_body(2, 2)))  # 0004 .. 0005
    assert before_attribution is not None
    assert before_attribution.record.privacy_action == "masked"
    assert before_attribution.record.workload is None
    assert before_attribution.record.service_account is None
    before_privacy = decode(encode(3, older_body(3, 5)))  # before 0004
    assert before_privacy is not None
    assert before_privacy.record.privacy_action is None
    assert before_privacy.record.workload is None
    assert decode(encode(4, older_body(4, 6))) is None  # not a row of any version


async def test_a_sidecar_records_its_workload_and_service_account(
    make_sidecar: SidecarFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WORKLOAD_ENV, "StatefulSet/search")
    monkeypatch.setenv(SERVICE_ACCOUNT_ENV, "search-reader")
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"{sc.base_url}/chat/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
        await sc.runtime.ledger.flush()
        rows = [r async for r in iter_entries(sc.runtime.ledger_url)]
    assert [(r["namespace"], r["route"], r["workload"], r["service_account"]) for r in rows] == [
        ("tests", "rag-api", "StatefulSet/search", "search-reader")
    ]


async def test_without_the_injector_s_env_the_columns_stay_empty(
    make_sidecar: SidecarFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WORKLOAD_ENV, raising=False)
    monkeypatch.delenv(SERVICE_ACCOUNT_ENV, raising=False)
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        body = {"model": "auto", "input": ["hi"]}
        async with http.post(f"{sc.base_url}/embeddings", json=body) as resp:
            assert resp.status == 200, await resp.text()
        await sc.runtime.ledger.flush()
        rows = [r async for r in iter_entries(sc.runtime.ledger_url)]
    assert [(r["workload"], r["service_account"]) for r in rows] == [(None, None)]


def _normal(sql: str) -> str:
    return re.sub(r"\(\s+", "(", re.sub(r"\s+", " ", sql)).strip()


@pytest.mark.postgres
async def test_a_tenant_writes_attribution_and_replays_older_rows(pg_url: str) -> None:
    await migrate_async(pg_url)
    ns = fresh_namespace()
    url = await tenant_url(pg_url, ns)  # the namespace's own login role
    rows = [record(1, namespace=ns, **PRIVACY, **ATTRIBUTION), record(2, namespace=ns)]
    rows += [record(3, namespace=ns), record(4, namespace=ns)]
    bodies = [
        encode_body(rows[0], ""),
        encode_body(rows[1], ""),
        older_body(3, 2, ns),  # spooled by a sidecar before 0006
        older_body(4, 5, ns),  # spooled before 0004
    ]
    database = open_database(url)
    try:
        async with database.connect() as connection:
            assert isinstance(connection, PostgresConnection)
            assert await write_postgres(connection, f"{ns}/pod", rows, bodies) == 4
    finally:
        await database.aclose()
    found = await fetch(
        pg_url,
        "SELECT request_id, workload, service_account, privacy_action "
        "FROM aegis.ledger_entries ORDER BY request_id",
    )
    assert [tuple(r) for r in found] == [
        ("req-000001", "Deployment/shop", "shop-sa", "masked"),
        ("req-000002", None, None, None),
        ("req-000003", None, None, "masked"),
        ("req-000004", None, None, None),
    ]


@pytest.mark.postgres
async def test_the_store_writes_attribution_on_postgres(pg_url: str) -> None:
    await migrate_async(pg_url)
    ns = fresh_namespace()
    url = await tenant_url(pg_url, ns)  # the namespace's own login role
    async with LedgerStore(url, holder=f"{ns}/pod") as store:
        store.append(record(1, namespace=ns, **ATTRIBUTION))
        long = "Pod/debug-x" + "y" * 400
        store.append(record(2, namespace=ns, workload=long, service_account="default"))
        await store.flush()
    found = await fetch(pg_url, "SELECT workload, service_account FROM aegis.ledger_entries")
    assert sorted(tuple(r) for r in found) == [
        ("Deployment/shop", "shop-sa"),
        ("Pod/debug-x" + "y" * 309, "default"),  # cut to the column's 320 characters
    ]


@pytest.mark.postgres
async def test_migration_0006_downgrades_and_upgrades_again(pg_url: str) -> None:
    engine = create_engine(pg_url)

    def to(revision: str, up: bool) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            (command.upgrade if up else command.downgrade)(config, revision)

        return run

    async def columns() -> set[str]:
        found = await fetch(
            pg_url,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'aegis' AND table_name = 'ledger_entries'",
        )
        return {str(name) for (name,) in found}

    async def function() -> str:
        [(source,)] = await fetch(
            pg_url, "SELECT prosrc FROM pg_proc WHERE proname = 'ledger_write' AND pronargs = 2"
        )
        return _normal(str(source))

    try:
        async with engine.begin() as conn:
            await conn.run_sync(to("0005", up=True))
        before = await function()
        assert "privacy_action" in before and "service_account" not in before
        assert await migrate_async(pg_url) == head_revision()
        assert set(COLUMNS) == await columns()
        assert "(r->>25)::varchar(253) AS service_account" in await function()
        async with engine.begin() as conn:
            await conn.run_sync(to("0005", up=False))
        assert not {"workload", "service_account"} & await columns()
        assert await function() == before  # 0004's function again, exactly
        assert await migrate_async(pg_url) == head_revision()
        assert set(COLUMNS) == await columns()
    finally:
        await engine.dispose()
