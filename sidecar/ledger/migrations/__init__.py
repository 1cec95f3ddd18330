"""Alembic migrations of the ledger schema (SQLite and PostgreSQL)."""

# Alembic loads these scripts by path (ledger.migrate); nothing here is imported.
__all__: list[str] = []
