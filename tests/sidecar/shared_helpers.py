"""Helpers for tests of the shared (PostgreSQL) ledger: configs, reads, requests."""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis.sidecar.contract import parse_config
from aegis.sidecar.http.server import RunningSidecar, serve
from aegis.sidecar.ledger.database import PostgresConnection
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.models import LedgerRecord
from aegis.sidecar.ledger.spool import encode_body
from aegis.sidecar.ledger.writes import write_postgres
from tests.sidecar.conftest import Fakes, base_document


def pg_document(
    fakes: Fakes,
    url: str,
    *,
    limit: str = "1",
    on_exceeded: str = "FallbackLocal",
    openai_limit: str | None = None,
) -> dict[str, Any]:
    """The origin's route with a DashScope budget (and optionally an OpenAI one),
    its ledger on PostgreSQL."""
    document = copy.deepcopy(base_document(fakes, Path("unused.db")))
    document["ledger"] = {"url": url}
    document["budgets"] = [
        {"name": "dash", "provider": "dashscope", "limitUSD": limit, "onExceeded": on_exceeded}
    ]
    if openai_limit is not None:
        document["budgets"].append(
            {"name": "oai", "provider": "openai", "limitUSD": openai_limit, "onExceeded": "Reject"}
        )
    return document


@asynccontextmanager
async def pg_sidecar(
    document: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pod: str
) -> AsyncIterator[RunningSidecar]:
    """A sidecar in this loop with its own pod name and spool directory."""
    monkeypatch.setenv("POD_NAME", pod)
    monkeypatch.setenv("AEGIS_SPOOL_DIR", str(tmp_path / "spool"))
    raw = yaml.safe_dump(document).encode()
    loaded = parse_config(raw, tmp_path / f"{pod}.yaml")
    async with serve(loaded, port=0, metrics_port=0, shutdown_timeout=2.0) as running:
        yield running


async def chat(
    session: aiohttp.ClientSession,
    running: RunningSidecar,
    *,
    batch: bool = False,
    critical: bool = False,
    words: int = 3,
    max_tokens: int = 32,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One chat completion; ``batch`` routes to DashScope, ``critical`` to OpenAI."""
    headers = {}
    if batch:
        headers["X-Aegis-Batch-Size"] = "20"
    if critical:
        headers.update({"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"})
    body = {
        "model": "auto",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": " ".join(["word"] * words)}],
    }
    async with session.post(
        f"{running.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        payload = await response.json()
        return response.status, dict(response.headers), payload


async def write_rows(
    connection: AsyncConnection | PostgresConnection,
    holder: str,
    rows: Sequence[LedgerRecord],
    budgets: Sequence[str],
) -> int:
    """``aegis_ledger_write`` of ``rows``, each charged to its comma-separated budgets,
    on ``connection`` (a test's SQLAlchemy connection: its asyncpg connection, in its
    transaction if one is open)."""
    bodies = [encode_body(row, charged) for row, charged in zip(rows, budgets, strict=True)]
    if isinstance(connection, AsyncConnection):
        connection = await driver_of(connection)
    return await write_postgres(connection, holder, rows, bodies)


async def driver_of(connection: AsyncConnection) -> PostgresConnection:
    """A test's SQLAlchemy connection as the sidecar's connection type (its asyncpg
    connection, in its transaction if one is open), for the sidecar's statements."""
    raw = await connection.get_raw_connection()
    return PostgresConnection(raw.driver_connection)


async def poll_until(
    done: Callable[[], bool | Awaitable[bool]], *, within: float = 10.0, every: float = 0.02
) -> None:
    """Wait until ``done()`` (a plain or an async check, e.g. a query) is true, at most
    ``within`` seconds: tests wait on outcomes, never for a fixed time."""
    async with asyncio.timeout(within):
        while True:
            result = done()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(every)  # poll interval; the deadline is the timeout above


async def fetch(url: str, sql: str) -> list[Any]:
    """Rows of ``sql`` on the database at ``url`` (superuser; tests only)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return list(await connection.execute(text(sql)))
    finally:
        await engine.dispose()


async def money(url: str, sql: str) -> Decimal:
    [(value,)] = await fetch(url, sql)
    return Decimal(value or 0)


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of series ``name`` whose labels include ``labels`` in a ``/metrics``
    text (every sidecar series also carries ``namespace`` and ``route``), else None."""
    for family in text_string_to_metric_families(metrics):
        for found in family.samples:
            if found.name == name and labels.items() <= found.labels.items():
                return float(found.value)
    return None
