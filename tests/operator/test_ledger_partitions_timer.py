"""The operator keeps the ledger's months ahead with its control role (which holds no
table privilege), and the reader role reads the summary table."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from aegis.operator.controllers.partitions import keep_partitions
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import migrate_async
from aegis.sidecar.ledger.roles import apply_grants
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.shared_helpers import poll_until

pytestmark = pytest.mark.postgres


@pytest.fixture
def roles(postgres: PostgresServer, pg_url: str) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"aegis_{k}_{suffix}" for k in ("control", "reader")}
    for role in names.values():
        postgres.psql(f"CREATE ROLE {role} LOGIN")
    yield {
        k: pg_url.replace("postgresql://postgres@", f"postgresql://{v}@") for k, v in names.items()
    }
    postgres.drop_database(pg_url.rsplit("/", 1)[1])
    for role in names.values():
        postgres.psql(f"DROP ROLE IF EXISTS {role}")


def next_month() -> str:
    now = datetime.now(UTC)
    return f"ledger_entries_{now.year + now.month // 12:04d}_{now.month % 12 + 1:02d}"


async def test_the_control_role_creates_months_ahead(pg_url: str, roles: dict[str, str]) -> None:
    await migrate_async(pg_url)
    owner = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    control = create_engine(roles["control"], isolation_level="AUTOCOMMIT")
    reader = create_engine(roles["reader"])
    try:
        async with owner.connect() as conn:
            names = {k: url.split("://", 1)[1].split("@", 1)[0] for k, url in roles.items()}
            await apply_grants(conn, control=names["control"], reader=names["reader"])
            # Next month's partition, made by the migration, is gone (as after a restore).
            await conn.execute(text(f"DROP TABLE aegis.{next_month()}"))

        async def present() -> bool:
            async with owner.connect() as conn:
                found = await conn.scalar(text(f"SELECT to_regclass('aegis.{next_month()}')"))
            return found is not None

        task = asyncio.create_task(keep_partitions(control, interval=3600))
        try:
            await poll_until(present)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        async with control.connect() as conn:  # the function only: no table privilege
            with pytest.raises(DBAPIError, match="permission denied"):
                await conn.execute(text("SELECT count(*) FROM aegis.ledger_entries"))
        async with reader.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM aegis.ledger_summary")) == 0
    finally:
        for engine in (owner, control, reader):
            await engine.dispose()
