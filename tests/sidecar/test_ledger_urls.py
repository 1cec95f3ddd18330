"""Ledger URLs as users write them, read without SQLAlchemy the way SQLAlchemy reads
them: the sidecar (drivers) and the operator (SQLAlchemy) take the same DSN."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from aegis.sidecar.ledger.database import DatabaseError, open_database
from aegis.sidecar.ledger.db import async_url, create_engine
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
    assert (parsed.is_sqlite, parsed.dsn, parsed.command_timeout) == (False, dsn, None)


def test_asyncpg_arguments_in_the_url_are_taken_as_sqlalchemy_takes_them() -> None:
    """What SQLAlchemy hands to asyncpg.connect as arguments must not reach the server
    as settings through asyncpg's DSN (it refuses unknown ones)."""
    parsed = parse_url(
        "postgresql://u@db/aegis?command_timeout=7.5&prepared_statement_cache_size=0"
        "&application_name=x&statement_cache_size=100"
    )
    assert parsed.dsn == "postgresql://u@db/aegis?application_name=x"
    assert parsed.command_timeout == 7.5


@pytest.mark.parametrize("value", ["", "soon", "0", "-1", "inf", "nan"])
def test_a_command_timeout_that_is_not_seconds_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=f"command_timeout={value!r}: expected a number"):
        parse_url(f"postgresql://u@db/aegis?command_timeout={value}")


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
    with pytest.raises(ValueError, match=message):  # the operator's engines too
        async_url(url)


@pytest.mark.parametrize("option", ["ssl=require", "sslmode=require"])
def test_both_tls_spellings_read_as_asyncpgs(option: str) -> None:
    """The operator and the sidecar read one Secret, through one reading."""
    url = f"postgresql://u@db/aegis?{option}"
    assert parse_url(url).dsn == "postgresql://u@db/aegis?sslmode=require"


def test_the_target_keeps_no_password() -> None:
    assert target_of("postgresql+asyncpg://tenant:s3cr%40t@db.internal:6432/aegis") == (
        "postgresql://tenant@db.internal:6432/aegis"
    )
    assert target_of("sqlite://") == "sqlite::memory:"


@pytest.mark.postgres
@pytest.mark.parametrize(
    "option",
    [
        "ssl=disable",
        "sslmode=disable",
        "command_timeout=5",
        "prepared_statement_cache_size=0",
        "statement_cache_size=0",
        "application_name=aegis-url-test",
    ],
)
async def test_an_option_connects_the_sidecar_and_the_operator(pg_url: str, option: str) -> None:
    """One DSN for both halves. Sent as written, ``ssl`` and the asyncpg arguments
    SQLAlchemy's users put in a URL would reach the server as unknown settings
    (asyncpg's DSN), and ``sslmode`` or a server setting such as ``application_name``
    would be an unknown argument to asyncpg.connect (SQLAlchemy)."""
    url = f"{pg_url}?{option}"
    query = "SELECT current_setting('application_name')"
    database = open_database(url)
    try:
        async with database.connect() as connection:
            row = await connection.fetchone(query)
        sidecar = row[0]
    finally:
        await database.aclose()
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            operator = await connection.scalar(text(query))
    finally:
        await engine.dispose()
    assert sidecar == operator  # the server saw the same session from both
    if option.startswith("application_name="):
        assert operator == "aegis-url-test"


@pytest.mark.postgres
async def test_the_command_timeout_bounds_the_sidecars_statements(pg_url: str) -> None:
    database = open_database(f"{pg_url}?command_timeout=0.2")
    try:
        async with database.connect() as connection:
            with pytest.raises(DatabaseError) as raised:
                await connection.fetchone("SELECT pg_sleep(5)")
        assert isinstance(raised.value.__cause__, TimeoutError)
        assert str(raised.value) == "the ledger database did not answer in time"
        async with database.connect() as connection:  # the pool serves on
            assert (await connection.fetchone("SELECT 1"))[0] == 1
    finally:
        await database.aclose()
