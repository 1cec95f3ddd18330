"""Alembic environment for the Aegis ledger (SQLite and PostgreSQL, async drivers).

Configuration comes from code, not from an ``alembic.ini`` in the working
directory: :mod:`aegis.sidecar.ledger.migrate` builds the ``Config`` and passes
either an open connection (``attributes["connection"]``, the normal path, so
migrations run inside the caller's event loop) or a URL (``attributes["url"]``,
for offline ``--sql`` output or a stand-alone run).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

# Alembic loads this file by path, not as a package module: imports are absolute.
from aegis.sidecar.ledger.db import async_url, create_engine
from aegis.sidecar.ledger.models import Base
from aegis.sidecar.ledger.revision import VERSION_TABLE

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no ledger URL given to the migration environment")
    return str(url)


def run_offline() -> None:
    """Emit SQL instead of running it (for a DBA to review)."""
    url = async_url(_url())
    context.configure(
        url=url.render_as_string(hide_password=False),
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    # Migrations name their schemas themselves: an engine's mapping of the models'
    # tables to schema aegis must not move Alembic's own table or older revisions'.
    mapped = connection.get_execution_options().get("schema_translate_map")
    connection.execution_options(schema_translate_map=None)
    try:
        _run_on(connection)
    finally:
        connection.execution_options(schema_translate_map=mapped)


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_url() -> None:
    engine = create_engine(_url())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_on)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_offline()
elif isinstance(config.attributes.get("connection"), Connection):
    run_on(config.attributes["connection"])
else:
    asyncio.run(run_with_url())
