"""Alembic migrations: from empty, idempotent, matching the models, config from code."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import (
    current_revision,
    head_revision,
    migrate,
    migrate_async,
)
from aegis.sidecar.ledger.models import Base
from aegis.sidecar.ledger.revision import VERSION_TABLE
from aegis.sidecar.ledger.store import LedgerStore
from tests.sidecar.ledger_helpers import record, sqlite_url


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")
        return {r[0] for r in rows}


def test_migrate_from_empty_without_alembic_ini(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no alembic.ini anywhere near
    db = tmp_path / "sub" / "dir" / "ledger.db"
    assert migrate(f"sqlite:///{db}") == head_revision() == "0012"
    assert tables(db) == {
        "ledger_entries",
        "budget_limits",
        "budget_spenders",
        "budget_periods",
        "budget_leases",
        "tenants",
        "ledger_identity",
        "ledger_summary",
        VERSION_TABLE,
    }
    assert indexes(db) == {
        "ix_ledger_entries_route_arm_created_at",
        "ix_ledger_entries_period_created_at",
        "ix_budget_leases_holder",
    }
    assert not (tmp_path / "alembic.ini").exists()


async def test_rerunning_migrations_is_a_no_op_and_keeps_data(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    async with LedgerStore(url) as store:  # SQLite: migrated at start
        store.append(record(1))
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        schema_before = sorted(db.execute("SELECT sql FROM sqlite_master"), key=str)
    assert await migrate_async(url) == head_revision()
    assert await migrate_async(url) == head_revision()
    async with LedgerStore(url) as store:  # and migrated again at the next start
        assert await store.spent("dashscope", "2026-11") > 0
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert sorted(db.execute("SELECT sql FROM sqlite_master"), key=str) == schema_before
        assert db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [
            (head_revision(),)
        ]


async def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    await migrate_async(url)
    engine = create_engine(url)

    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_store_with_migrate_off_warns_about_an_old_schema(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # PostgreSQL stores default to migrate=False; the branch is the same on SQLite.
    async with LedgerStore(sqlite_url(tmp_path), migrate=False):
        pass
    assert "run `aegis ledger migrate`" in caplog.text
    assert "ledger_entries" not in tables(tmp_path / "ledger.db")


def test_offline_sql_for_postgresql() -> None:
    out = io.StringIO()
    assert migrate("postgresql://aegis:p%40ss@db.example:5432/ledger", sql=True, out=out) is None
    sql = out.getvalue()
    assert "CREATE TABLE ledger_entries" in sql
    assert "cost_usd NUMERIC(18, 6) NOT NULL" in sql
    assert "created_at TIMESTAMP WITH TIME ZONE NOT NULL" in sql
    assert "CONSTRAINT pk_ledger_entries PRIMARY KEY (request_id)" in sql
    assert "CREATE INDEX ix_ledger_entries_provider_period_cost_usd" in sql
    assert "DROP INDEX aegis.ix_ledger_entries_provider_period_cost_usd" in sql  # 0012
    assert f"CREATE TABLE {VERSION_TABLE}" in sql
    assert "CREATE TYPE" not in sql  # no native enums: later migrations stay simple


def test_offline_sql_for_sqlite_uses_integer_micro_dollars() -> None:
    out = io.StringIO()
    migrate("sqlite:///unused.db", sql=True, out=out)
    assert "cost_usd BIGINT NOT NULL" in out.getvalue()
    assert not Path("unused.db").exists()


def test_head_revision_constant_matches_the_scripts() -> None:
    from aegis.sidecar.ledger.migrate import head_revision, script_head

    assert head_revision() == script_head()


def test_a_sidecar_import_does_not_load_alembic() -> None:
    import subprocess
    import sys

    code = "import sys, aegis.sidecar.http.server; print('alembic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def schema(path: Path) -> list[tuple[str, str, str, tuple[str, ...], list[str]]]:
    """Each object's definition: its lines with the columns in order and the table
    constraints as a set (batch mode's rebuilds order them differently run to run)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    normalised = []
    for kind, name, table, sql in rows:
        lines = [line.strip().rstrip(",").strip() for line in (sql or "").splitlines()]
        constraints = sorted(line for line in lines if line.startswith("CONSTRAINT "))
        others = tuple(line for line in lines if not line.startswith("CONSTRAINT "))
        normalised.append((kind, name, table, others, constraints))
    return sorted(normalised, key=str)  # rowids differ where batch mode rebuilt a table


def test_an_empty_sqlite_ledger_gets_the_chains_schema_without_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    from alembic import command

    from aegis.sidecar.ledger import sqlite_schema
    from aegis.sidecar.ledger.migrate import alembic_config

    chain, direct = tmp_path / "chain.db", tmp_path / "direct.db"
    command.upgrade(alembic_config(f"sqlite:///{chain}"), "head")
    code = (
        "import sys\nfrom aegis.sidecar.ledger.migrate import migrate\n"
        f"print(migrate({f'sqlite:///{direct}'!r}), 'alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [head_revision(), "False"]
    with sqlite3.connect(chain) as db:
        query = f"SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name != '{VERSION_TABLE}'"
        statements = [row[0] for row in db.execute(query)]
    # After a migration that changes the SQLite schema: paste these into sqlite_schema.
    assert schema(direct) == schema(chain), statements
    assert head_revision() == sqlite_schema.REVISION
    for path in (chain, direct):
        with sqlite3.connect(path) as db:
            assert db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [
                (head_revision(),)
            ]
            ((ledger_id, created_at),) = db.execute("SELECT * FROM ledger_identity").fetchall()
            assert re.fullmatch(r"[0-9a-f-]{36}", ledger_id)
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", created_at)
    with sqlite3.connect(chain) as a, sqlite3.connect(direct) as b:
        (id_a,), (id_b,) = (
            db.execute("SELECT ledger_id FROM ledger_identity").fetchone() for db in (a, b)
        )
        assert id_a != id_b  # each ledger its own id


def test_alembic_takes_a_ledger_created_without_it_down_and_up(tmp_path: Path) -> None:
    # The stamp and the schema are the chain's: Alembic steps back over 0009 (a batch
    # rebuild on SQLite) and forward again with the rows kept.
    from alembic import command

    from aegis.sidecar.ledger.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert migrate(url) == head_revision()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        db.execute(
            "INSERT INTO budget_limits VALUES ('Cluster', '', 'b', 'openai', 5, '2026-11-01')"
        )
    command.downgrade(alembic_config(url), "0008")
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("0008",)]
    assert migrate(url) == head_revision()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT budget_name, limit_usd FROM budget_limits").fetchall() == [
            ("b", 5)
        ]


def test_a_sidecar_migrates_an_older_sqlite_ledger_at_start(tmp_path: Path) -> None:
    """The store's start: a ledger at an older revision goes through Alembic (the only
    start that loads it), then takes rows; its id and earlier rows are kept."""
    from alembic import command

    from aegis.sidecar.ledger.migrate import alembic_config

    url = sqlite_url(tmp_path)
    assert migrate(url) == head_revision()
    command.downgrade(alembic_config(url), "0008")
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        [(ledger_id,)] = db.execute("SELECT ledger_id FROM ledger_identity").fetchall()

    async def write() -> None:
        async with LedgerStore(url) as store:
            store.append(record(1))
            await store.flush()
            assert store.binder.ledger_id == ledger_id

    asyncio.run(write())
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [
            (head_revision(),)
        ]
        assert db.execute("SELECT request_id FROM ledger_entries").fetchall() == [("req-000001",)]
