"""Where the read side finds the ledger: a URL, or an engine the caller owns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import create_engine

LedgerSource = str | URL | AsyncEngine


@asynccontextmanager
async def open_engine(source: LedgerSource) -> AsyncIterator[AsyncEngine]:
    """Use a caller's engine, or open one read-only (never creating a SQLite file)."""
    if isinstance(source, AsyncEngine):
        yield source
        return
    engine = create_engine(source, create=False)
    try:
        yield engine
    finally:
        await engine.dispose()
