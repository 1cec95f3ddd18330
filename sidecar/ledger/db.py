"""SQLAlchemy engines for the ledger's readers, control and migrations (the operator
and ``aegis ledger …``): async SQLAlchemy on aiosqlite or asyncpg. The sidecar process
talks to the drivers without SQLAlchemy (:mod:`.database`).

URLs are accepted as users write them (``sqlite:///x.db``, ``postgresql://…``)
and mapped to the async drivers, because the DSN often comes from a Secret
written for other tools. A PostgreSQL URL's options are read once, as the
sidecar's pool reads them (:func:`~.urls.parse_url`), and reach asyncpg in its DSN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .database import LedgerUnavailableError
from .records import SCHEMA
from .urls import parse_url

__all__ = ["POOLER_SAFE", "LedgerUnavailableError", "async_url", "create_engine", "sqlite_path"]


def _unnamed() -> str:
    return ""


# Behind a transaction-mode pooler (PgBouncer before 1.21, or with
# max_prepared_statements = 0) consecutive transactions of one client run on
# different server connections, so a statement prepared by name in one is missing
# (or, numbered per client, already taken) in the next. asyncpg's own cache and
# SQLAlchemy's are therefore off, and SQLAlchemy's prepare uses the unnamed
# statement: asyncpg sends Parse/Describe/Flush and Bind/Execute/Sync as one
# exchange, which the pooler keeps on one server connection. Directly on
# PostgreSQL this costs one extra round trip per statement; every statement of the
# sidecar is off the request path (batched rows, lease calls).
POOLER_SAFE: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": _unnamed,
}


def async_url(url: str | URL) -> URL:
    """``url`` with the async driver for its backend. The rules are the sidecar's
    (:func:`~.urls.parse_url`): other backends and drivers are refused, a SQLite URL
    takes no options; a PostgreSQL URL's options are read by :func:`create_engine`."""
    text = _as_text(url)
    driver = "sqlite+aiosqlite" if parse_url(text).is_sqlite else "postgresql+asyncpg"
    return make_url(text).set(drivername=driver)


def _as_text(url: str | URL) -> str:
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL (``None`` for in-memory or non-SQLite)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def create_engine(url: str | URL, *, create: bool = True, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url``.

    SQLite: the file's directory is created (``create=True``) or the file must
    already exist (``create=False``, for readers such as ``aegis ledger report``,
    so that a typo does not silently produce an empty ledger). WAL journaling lets
    a reader run beside a writing sidecar; ``synchronous=NORMAL`` is durable
    against process crashes (rows still queued in memory are also in the spool
    file, :mod:`.spool`, when there is one, and replayed on restart).
    PostgreSQL: connections are pinged before use because sidecars outlive
    database restarts, and the models' tables are those of schema ``aegis``
    (:data:`~aegis.sidecar.ledger.models.SCHEMA`, mapped here: SQLite has no schemas).
    Statements are never prepared by name (:data:`POOLER_SAFE`), so the same engine
    works directly and through PgBouncer in transaction mode.
    """
    parsed = async_url(url)
    path = sqlite_path(parsed)
    if parsed.get_backend_name() == "sqlite":
        if path is not None:
            if create:
                path.expanduser().parent.mkdir(parents=True, exist_ok=True)
            elif not path.expanduser().exists():
                raise LedgerUnavailableError(f"no ledger database at {path}")
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs["connect_args"] = {
        **POOLER_SAFE,
        **_dsn_options(url),
        **(kwargs.get("connect_args") or {}),
    }
    # The options travel in the DSN (above); SQLAlchemy would hand them to
    # asyncpg.connect as arguments, which refuses a server setting.
    parsed = parsed.set(query={})
    options = dict(kwargs.pop("execution_options", None) or {})
    options.setdefault("schema_translate_map", {None: SCHEMA})
    return create_async_engine(parsed, execution_options=options, **kwargs)


def _dsn_options(url: str | URL) -> dict[str, Any]:
    """A PostgreSQL URL's options as the sidecar's pool reads them (:mod:`.urls`):
    asyncpg parses the DSN (TLS in either spelling, server settings such as
    ``application_name``), and ``command_timeout`` is its argument. One reading of
    a shared DSN for the operator and every sidecar."""
    reading = parse_url(_as_text(url))
    found: dict[str, Any] = {"dsn": reading.dsn}
    if reading.command_timeout is not None:
        found["command_timeout"] = reading.command_timeout
    return found


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()
