"""The ledger's Alembic revisions, oldest first."""

# Alembic loads these scripts by path (ledger.migrate); nothing here is imported.
__all__: list[str] = []
