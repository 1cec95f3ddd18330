"""Schema migrations for the ledger, driven from code (no ``alembic.ini`` needed).

SQLite ledgers are migrated automatically when a sidecar starts. PostgreSQL
ledgers are migrated by ``aegis ledger migrate`` (the operator's Helm job), since
a sidecar's database role should not be allowed to change the schema.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import sqlite_schema
from .db import async_url, create_engine
from .revision import HEAD_REVISION, VERSION_TABLE
from .sqlite_writes import utc_text

if TYPE_CHECKING:
    from alembic.config import Config


# Alembic (with Mako: ~8 MB and ~0.1 s) is imported only when a migration runs or
# its scripts are read; a ledger already at HEAD_REVISION is checked with one query,
# and an empty SQLite ledger is given the head schema from .sqlite_schema (a test
# compares it with the chain's result). The revision and the version table's name
# are .revision's, where the sidecar reads them without SQLAlchemy.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | URL | None = None, sql_out: TextIO | None = None) -> Config:
    """An Alembic ``Config`` for the ledger's migration scripts.

    ``sql_out`` receives the DDL in offline (``--sql``) mode.
    """
    from alembic.config import Config

    cfg = Config(output_buffer=sql_out)
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # Passed as an attribute, not a main option: configparser would treat a
        # '%' in a URL-encoded password as interpolation.
        cfg.attributes["url"] = async_url(url).render_as_string(hide_password=False)
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this version of Aegis."""
    return HEAD_REVISION


def script_head() -> str:
    """The head revision as Alembic reads it from the scripts (a test compares)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no ledger migrations found")
    return head


def _upgrade_on(connection: Connection, revision: str) -> None:
    if revision in ("head", HEAD_REVISION):
        if _current_on(connection) == HEAD_REVISION:
            return  # the usual start: nothing to do, and no Alembic to load
        if _create_empty_sqlite(connection):
            return  # a new pod's ledger: the head schema at once
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _create_empty_sqlite(connection: Connection) -> bool:
    """Give an empty SQLite database the head schema without Alembic (False: not
    SQLite, not empty, or :mod:`.sqlite_schema` is older than the head)."""
    if connection.dialect.name != "sqlite" or sqlite_schema.REVISION != HEAD_REVISION:
        return False
    if connection.execute(text("SELECT count(*) FROM sqlite_master")).scalar_one():
        return False
    created_at = utc_text(datetime.now(UTC))
    for statement, args in sqlite_schema.head_statements(str(uuid.uuid4()), created_at):
        connection.exec_driver_sql(statement, args)
    return True


def _current_on(connection: Connection) -> str | None:
    """What Alembic's ``get_current_revision`` answers, read without Alembic."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    if len(rows) > 1:
        raise RuntimeError(f"{VERSION_TABLE} holds several heads: {[r[0] for r in rows]}")
    return str(rows[0][0]) if rows else None


async def upgrade(target: AsyncEngine | AsyncConnection, revision: str = "head") -> None:
    """Upgrade the ledger schema on an open engine or connection, in this event loop.

    Idempotent: a database already at ``revision`` is left untouched.
    """
    if isinstance(target, AsyncConnection):
        await target.run_sync(_upgrade_on, revision)
        return
    async with target.begin() as connection:
        await connection.run_sync(_upgrade_on, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current_on)


async def migrate_async(url: str | URL, revision: str = "head") -> str | None:
    """Open ``url``, upgrade it to ``revision`` and return the revision reached."""
    engine = create_engine(url)
    try:
        await upgrade(engine, revision)
        return await current_revision(engine)
    finally:
        await engine.dispose()


def migrate(
    url: str | URL, revision: str = "head", *, sql: bool = False, out: TextIO | None = None
) -> str | None:
    """``aegis ledger migrate``: upgrade the ledger at ``url`` to ``revision``.

    With ``sql=True`` nothing is executed: the DDL is written to ``out`` (offline
    mode, for review by a DBA) and ``None`` is returned. Otherwise returns the
    revision the database is at afterwards. Synchronous (it runs its own event
    loop); from async code use :func:`migrate_async` or :func:`upgrade`.
    """
    if sql:
        from alembic import command

        command.upgrade(alembic_config(url, sql_out=out or sys.stdout), revision, sql=True)
        return None
    return asyncio.run(migrate_async(url, revision))
