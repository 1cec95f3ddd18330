"""Which revision a ledger's schema is at, read without Alembic, and a new SQLite
ledger brought to the head.

A sidecar checks its ledger once at start. A SQLite ledger at :data:`HEAD_REVISION`
needs nothing; an empty one is given the head schema at once (:mod:`.sqlite_schema`);
an older one is migrated by Alembic (the store calls :func:`~.migrate.migrate_async`,
which loads SQLAlchemy and Alembic for that start only). A PostgreSQL ledger is never
migrated by a sidecar (its role may not change the schema): a revision behind the
head is logged, and ``aegis ledger migrate`` (the operator's Helm job) migrates it.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from . import sqlite_schema
from .database import Database, DatabaseError
from .sqlite_writes import utc_text

__all__ = ["HEAD_REVISION", "VERSION_TABLE", "current_revision", "prepare", "warn_if_behind"]

log = logging.getLogger(__name__)

# A test keeps HEAD_REVISION equal to the head of the scripts in migrations/versions.
HEAD_REVISION = "0012"
# Not Alembic's default name: in a shared PostgreSQL database the ledger must not
# collide with another application's ``alembic_version``.
VERSION_TABLE = "aegis_ledger_version"
_UNDEFINED_TABLE = "42P01"


async def current_revision(database: Database) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    async with database.connect() as connection:
        if database.is_sqlite:
            found = await connection.fetchrow(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", VERSION_TABLE
            )
            if found is None:
                return None
        try:
            rows = await connection.fetch(f"SELECT version_num FROM {VERSION_TABLE}")
        except DatabaseError as exc:
            if exc.sqlstate == _UNDEFINED_TABLE:
                return None
            raise
    if len(rows) > 1:
        raise RuntimeError(f"{VERSION_TABLE} holds several heads: {[r[0] for r in rows]}")
    return str(rows[0][0]) if rows else None


async def prepare(database: Database) -> bool:
    """True when the ledger is at the head revision, or was an empty SQLite database
    and is now; False when Alembic must migrate it (:mod:`.migrate`)."""
    if await current_revision(database) == HEAD_REVISION:
        return True
    if not database.is_sqlite or sqlite_schema.REVISION != HEAD_REVISION:
        return False
    return await _create_if_empty(database)


async def _create_if_empty(database: Database) -> bool:
    async with database.transaction() as connection:
        row = await connection.fetchrow("SELECT count(*) FROM sqlite_master")
        if row is None or row[0]:
            return False
        created_at = utc_text(datetime.now(UTC))
        for statement, args in sqlite_schema.head_statements(str(uuid.uuid4()), created_at):
            await connection.execute(statement, *args)
    return True


async def warn_if_behind(database: Database) -> None:
    """Log when the ledger is not at this version's head; silent when unreachable
    (the writer retries, the spool holds the rows)."""
    try:
        revision = await current_revision(database)
    except Exception:
        log.exception("ledger database unreachable at start")
        return
    if revision != HEAD_REVISION:
        log.warning(
            "ledger schema is at revision %s, this sidecar expects %s: run `aegis ledger migrate`",
            revision,
            HEAD_REVISION,
        )
