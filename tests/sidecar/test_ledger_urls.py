"""Ledger URLs as users write them, read without SQLAlchemy the way SQLAlchemy reads
them: the sidecar (drivers) and the operator (SQLAlchemy) take the same DSN."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis.sidecar.ledger.database import open_database
from aegis.sidecar.ledger.db import async_url
from aegis.sidecar.ledger.urls import parse_url, target_of


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///ledger.db", Path("ledger.db")),
        ("sqlite+aiosqlite:///data/ledger.db", Path("data/ledger.db")),
        ("sqlite:////var/lib/aegis/ledger.db", Path("/var/lib/aegis/ledger.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
    ],
)
def test_sqlite_urls_name_the_file_sqlalchemy_names(url: str, path: Path | None) -> None:
    parsed = parse_url(url)
    assert parsed.is_sqlite and parsed.path == path
    database = async_url(url).database
    assert path == (None if database in (None, "", ":memory:") else Path(str(database)))


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        ("postgresql://u:p@db:5432/aegis", "postgresql://u:p@db:5432/aegis"),
        ("postgresql+asyncpg://u@db/aegis", "postgresql://u@db/aegis"),
        ("postgresql://u@db/aegis?ssl=require", "postgresql://u@db/aegis?sslmode=require"),
        (
            "postgresql://u@db/aegis?application_name=x&ssl=verify-full",
            "postgresql://u@db/aegis?application_name=x&sslmode=verify-full",
        ),
    ],
)
def test_postgresql_urls_become_asyncpg_dsns(url: str, dsn: str) -> None:
    parsed = parse_url(url)
    assert (parsed.is_sqlite, parsed.dsn) == (False, dsn)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/aegis", "unsupported ledger database 'mysql'"),
        ("postgresql+psycopg://db/aegis", "unsupported ledger driver"),
        ("sqlite:///ledger.db?mode=ro", "take no options"),
        ("ledger.db", "looks like"),
    ],
)
def test_other_urls_are_refused_by_name(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_the_target_keeps_no_password() -> None:
    assert target_of("postgresql+asyncpg://tenant:s3cr%40t@db.internal:6432/aegis") == (
        "postgresql://tenant@db.internal:6432/aegis"
    )
    assert target_of("sqlite://") == "sqlite::memory:"


@pytest.mark.postgres
async def test_sqlalchemys_ssl_option_reaches_asyncpg_as_sslmode(pg_url: str) -> None:
    """Sent as written, ``ssl`` would reach the server as an unknown setting."""
    database = open_database(pg_url + "?ssl=disable")
    try:
        async with database.connect() as connection:
            row = await connection.fetchone("SELECT 1")
        assert row[0] == 1
    finally:
        await database.aclose()
