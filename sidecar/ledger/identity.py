"""Which ledger a database is: the id a spool is bound to.

A spooled row must be replayed only into the ledger it was written for. A
database's DSN does not say which ledger it is (a new, empty database can be
created under the same name, or a Secret can point a restarted pod elsewhere), so
the ledger says it itself: migration 0005 writes a random ``ledger_id`` into
``ledger_identity``, and on PostgreSQL ``aegis.ledger_identity()`` adds the
database's own identity (the cluster's system identifier and the database's oid).
Both must match for a spool to replay (:attr:`Identity.key`).

A ledger at an older revision has no id: it is then known by its target (the DSN
without password, :func:`target_of`) and a warning says to migrate.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import async_url, sqlite_path

_PG_IDENTITY = text("SELECT ledger_id, database FROM aegis.ledger_identity()")
_SQLITE_IDENTITY = text("SELECT ledger_id FROM ledger_identity")
_UNDEFINED = ("42883", "42P01", "3F000")  # no such function, table or schema


@dataclass(frozen=True, slots=True)
class Identity:
    """One ledger: its own id and the database it lives in; ``ledger_id`` is
    ``None`` for a ledger migrated before 0005 (known by its target only)."""

    ledger_id: str | None
    database: str

    @property
    def key(self) -> str:
        """What a spool run records and compares: ``<ledger_id>@<database>``."""
        return (
            f"{self.ledger_id}@{self.database}"
            if self.ledger_id
            else f"unversioned@{self.database}"
        )


def target_of(url: str | URL) -> str:
    """The DSN without password or driver: where a sidecar was told to write.

    Shown to people (``aegis ledger spool``) and used for spools of a run that never
    reached its database; a password never reaches the spool directory."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        return f"sqlite:{path.expanduser().resolve() if path else ':memory:'}"
    user = f"{parsed.username}@" if parsed.username else ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"postgresql://{user}{parsed.host or ''}{port}/{parsed.database or ''}"


async def read_identity(engine: AsyncEngine) -> Identity:
    """The identity of the ledger behind ``engine``; raises when unreachable."""
    url = engine.url
    async with engine.connect() as connection:
        try:
            if url.get_backend_name() == "sqlite":
                row = (await connection.execute(_SQLITE_IDENTITY)).first()
                return Identity(str(row[0]) if row else None, target_of(url))
            row = (await connection.execute(_PG_IDENTITY)).one()
            return Identity(str(row[0]) if row[0] else None, f"postgresql:{row[1]}")
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
            if code not in _UNDEFINED and "no such table" not in str(exc.orig):
                raise
    return Identity(None, target_of(url))
