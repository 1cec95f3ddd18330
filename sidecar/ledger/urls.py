"""Ledger URLs as users write them, read without a database library.

``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite://`` (in memory),
``postgresql://user:password@host:5432/db``, and the ``+aiosqlite``/``+asyncpg``
driver names SQLAlchemy URLs carry (the DSN often comes from a Secret written for
other tools). The sidecar process opens its ledger from a :class:`LedgerUrl`
(:mod:`.database`); the operator and the CLI hand the same text to SQLAlchemy
(:mod:`.db`), whose engines take the driver name and the options read here, so one
DSN means the same to both. A PostgreSQL URL's options are asyncpg's DSN options
(TLS, server settings such as ``application_name``), with what SQLAlchemy's users
write for asyncpg's arguments read as they mean it: ``ssl=require`` as
``sslmode=require``, ``command_timeout`` as the pool's argument, and the
statement-cache sizes dropped (nothing is prepared by name). Sent as written, each
would reach the server as an unknown setting.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from ..contract import LedgerSpec

__all__ = ["LedgerUrl", "is_sqlite", "ledger_url", "parse_url", "target_of"]

Backend = Literal["sqlite", "postgresql"]
_DRIVERS: dict[str, tuple[Backend, str]] = {
    "sqlite": ("sqlite", "aiosqlite"),
    "postgresql": ("postgresql", "asyncpg"),
}


@dataclass(frozen=True, slots=True)
class LedgerUrl:
    """Where a ledger lives: a SQLite file (``path``; ``None`` in memory) or a
    PostgreSQL DSN (``dsn``: the URL without a driver name, as asyncpg reads it)."""

    backend: Backend
    path: Path | None = None
    dsn: str = ""
    command_timeout: float | None = None
    """Seconds any statement may take (``?command_timeout=``), asyncpg's default none."""

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"


def ledger_url(spec: LedgerSpec, environ: Mapping[str, str] | None = None) -> str:
    """The DSN to use: ``$urlEnv`` when set and non-empty, else ``spec.url``."""
    env = os.environ if environ is None else environ
    if spec.url_env and env.get(spec.url_env):
        return env[spec.url_env]
    return spec.url


def parse_url(url: str) -> LedgerUrl:
    """``url`` read as SQLAlchemy reads it; other backends and drivers are refused."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        raise ValueError("a ledger URL looks like sqlite:///ledger.db or postgresql://host/db")
    name, _, driver = scheme.lower().partition("+")
    if name not in _DRIVERS:
        raise ValueError(f"unsupported ledger database {name!r}: use sqlite or postgresql")
    backend, async_driver = _DRIVERS[name]
    if driver and driver != async_driver:
        raise ValueError(f"unsupported ledger driver {scheme!r}")
    if backend == "postgresql":
        return _postgresql(rest)
    location, _, query = rest.partition("?")
    if query:
        raise ValueError(f"SQLite ledger URLs take no options, got {query!r}")
    # "sqlite://" + "" is in memory; "sqlite://" + "/x.db" is x.db relative.
    database = location[1:] if location.startswith("/") else location
    if database in ("", ":memory:"):
        return LedgerUrl(backend)
    return LedgerUrl(backend, path=Path(unquote(database)))


# asyncpg.connect arguments SQLAlchemy users put in the URL that the sidecar's
# connections do without: it never caches a statement by name (PgBouncer-safe).
_STATEMENT_CACHE_OPTIONS = frozenset({"prepared_statement_cache_size", "statement_cache_size"})


def _postgresql(rest: str) -> LedgerUrl:
    location, _, query = rest.partition("?")
    options: list[str] = []
    command_timeout: float | None = None
    for pair in query.split("&") if query else ():
        key, _, value = pair.partition("=")
        if key == "ssl":
            # ``ssl=require`` is how SQLAlchemy's users ask for TLS; asyncpg's own
            # DSN names that ``sslmode`` and would send an unknown ``ssl`` to the server.
            options.append("sslmode=" + value)
        elif key == "command_timeout":
            command_timeout = _seconds(key, unquote(value))
        elif key not in _STATEMENT_CACHE_OPTIONS:
            options.append(pair)
    if options:
        location += "?" + "&".join(options)
    return LedgerUrl("postgresql", dsn=f"postgresql://{location}", command_timeout=command_timeout)


def _seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"ledger URL option {key}={value!r}: expected a number of seconds > 0")
    return seconds


def is_sqlite(url: str) -> bool:
    return parse_url(url).is_sqlite


def target_of(url: str) -> str:
    """The DSN without password or driver: where a sidecar was told to write.

    Shown to people (``aegis ledger spool``) and used for spools of a run that never
    reached its database; a password never reaches the spool directory."""
    parsed = parse_url(url)
    if parsed.is_sqlite:
        path = parsed.path
        return f"sqlite:{path.expanduser().resolve() if path else ':memory:'}"
    location = parsed.dsn.partition("://")[2].partition("?")[0]
    netloc, _, database = location.partition("/")
    userinfo, _, hostport = netloc.rpartition("@")
    username = unquote(userinfo.partition(":")[0])
    user = f"{username}@" if username else ""
    return f"postgresql://{user}{hostport}/{unquote(database)}"
