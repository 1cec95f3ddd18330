"""Which ledger a database is: the id a spool is bound to.

A spooled row must be replayed only into the ledger it was written for. A
database's DSN does not say which ledger it is (a new, empty database can be
created under the same name, or a Secret can point a restarted pod elsewhere), so
the ledger says it itself: migration 0005 writes a random ``ledger_id`` into
``ledger_identity``, and on PostgreSQL ``aegis.ledger_identity()`` adds the
database's own identity (the cluster's system identifier and the database's oid).
Both must match for a spool to replay (:attr:`Identity.key`).

A ledger at an older revision has no id: it is then known by its target (the DSN
without password, :func:`~.urls.target_of`) and a warning says to migrate.
"""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database, DatabaseError

__all__ = ["Identity", "read_identity"]

_PG_IDENTITY = "SELECT ledger_id, database FROM aegis.ledger_identity()"
_SQLITE_IDENTITY = "SELECT ledger_id FROM ledger_identity"
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


async def read_identity(database: Database, target: str) -> Identity:
    """The identity of the ledger in ``database`` (``target``: its
    :func:`~.urls.target_of`); raises when unreachable."""
    async with database.connect() as connection:
        try:
            if database.is_sqlite:
                row = await connection.fetchrow(_SQLITE_IDENTITY)
                return Identity(str(row[0]) if row else None, target)
            row = await connection.fetchone(_PG_IDENTITY)
            return Identity(str(row[0]) if row[0] else None, f"postgresql:{row[1]}")
        except DatabaseError as exc:
            if exc.sqlstate not in _UNDEFINED and "no such table" not in str(exc):
                raise
    return Identity(None, target)
