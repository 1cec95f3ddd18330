"""The statements that write a batch of ledger rows, per backend.

SQLite (standalone, one writer): one precompiled ``INSERT … ON CONFLICT
(request_id) DO NOTHING`` run for the batch's rows (:mod:`.sqlite_writes`).
PostgreSQL (shared, many writers): one call of ``aegis.ledger_write`` (migration
0003), which inserts the batch with the same conflict rule and, in the same
transaction, charges the newly inserted rows to the writing sidecar's budget
leases. The namespace's database role needs only EXECUTE on it (rows of another
namespace are refused as a check violation: permanent, so the store isolates that
row instead of retrying the batch for ever). The batch travels as one JSON array of
the rows' spool encodings, so building it costs a string join instead of
encoding twenty arrays value by value.

On an autocommit connection (the store's) the call is one round trip: a simple-
protocol query with the arguments as escaped literals. A parameterised statement
costs two behind a transaction-mode pooler (statements are never prepared by name:
:data:`~aegis.sidecar.ledger.db.POOLER_SAFE`), Parse/Describe then Bind/Execute,
and the server connection stays assigned to the sidecar in between, waiting for
its event loop: with 200 busy sidecars on 20 server connections, half of them sat
in that wait. Inside a caller's transaction the parameterised statement is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    StatementError,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningInsert

from .models import COLUMNS, LEDGER, LedgerRecord
from .sqlite_writes import write_sqlite_rows

# SQLAlchemy packs at most 1000 rows (insertmanyvalues_page_size) and 32700
# parameters into one statement; a batch must fit in one.
MAX_ROWS_PER_STATEMENT = min(1000, 32_000 // len(COLUMNS))

_WRITE_SQL = text("SELECT aegis.ledger_write(:holder, :rows)")
_BOUND_WRITE_SQL = text("SELECT aegis.ledger_write(:holder, :rows, :ledger)")
# aegis.ledger_write(holder, rows, ledger) refuses rows bound to another ledger (0005).
LEDGER_MISMATCH = "55000"


def insert_statement(dialect_name: str) -> ReturningInsert[tuple[str]]:
    """The INSERT for a batch: run with a list of rows, it becomes one multi-row
    ``INSERT … VALUES (…), (…) ON CONFLICT (request_id) DO NOTHING RETURNING request_id``
    (PostgreSQL: ``ON CONFLICT (request_id, created_at)``, the partitioned table's key).

    Built with the dialect's own ``insert`` because ``ON CONFLICT DO NOTHING`` is
    not standard SQL (SQLite and PostgreSQL spell it alike). ``RETURNING`` makes
    SQLAlchemy's "insertmanyvalues" batching apply (it packs an executemany into
    one multi-row statement, compiled once and cached, instead of compiling a
    fresh ``VALUES`` list per batch, which costs ~0.2 ms per row) and tells which
    rows were new.
    """
    if dialect_name == "postgresql":
        # The partitioned ledger's unique key includes its partition key (0007).
        return (
            postgresql.insert(LEDGER)
            .on_conflict_do_nothing(index_elements=[LEDGER.c.request_id, LEDGER.c.created_at])
            .returning(LEDGER.c.request_id)
        )
    if dialect_name == "sqlite":
        return (
            sqlite.insert(LEDGER)
            .on_conflict_do_nothing(index_elements=[LEDGER.c.request_id])
            .returning(LEDGER.c.request_id)
        )
    raise ValueError(f"unsupported ledger dialect {dialect_name!r}")


def write_call() -> TextClause:
    """``SELECT aegis.ledger_write(:holder, :rows)``: the batch as one JSON array."""
    return _WRITE_SQL


def check_rows(rows: Sequence[LedgerRecord]) -> None:
    """The checks the typed SQLAlchemy path makes (Money, UTCDateTime), for rows that
    go to PostgreSQL as JSON: float money and naive instants are refused."""
    for record in rows:
        if isinstance(record.cost_usd, bool) or not isinstance(record.cost_usd, Decimal | int):
            raise TypeError(f"money must be Decimal, got {type(record.cost_usd).__name__}")
        if record.created_at.utcoffset() is None:
            raise ValueError("ledger timestamps must be timezone-aware")


async def write_postgres(
    connection: AsyncConnection,
    holder: str,
    rows: Sequence[LedgerRecord],
    bodies: Sequence[bytes],
    *,
    ledger: str | None = None,
) -> int:
    """Insert and charge one batch (``bodies``: :func:`~aegis.sidecar.ledger.spool.encode_body`
    of each row); returns how many rows were new. With ``ledger`` (the ledger id the
    rows are bound to, migration 0005) the database refuses the batch unless it is
    that ledger (SQLSTATE :data:`LEDGER_MISMATCH`), before inserting or charging."""
    check_rows(rows)
    batch = (b"[" + b",".join(bodies) + b"]").decode()
    raw = await connection.get_raw_connection()
    if getattr(raw.dbapi_connection, "autocommit", False):
        return await _write_simple(connection, raw.driver_connection, holder, batch, ledger)
    params = {"holder": holder, "rows": batch}
    if ledger is None:
        result = await connection.execute(write_call(), params)
    else:
        result = await connection.execute(_BOUND_WRITE_SQL, {**params, "ledger": ledger})
    return int(result.scalar_one())


def literal(value: str) -> str:
    """``value`` as an SQL string constant: ``E'…'`` with backslashes and quotes
    doubled, which means the same whatever ``standard_conforming_strings`` says."""
    if "\x00" in value:
        raise ValueError("ledger text cannot hold NUL characters")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


async def _write_simple(
    connection: AsyncConnection, driver: Any, holder: str, batch: str, ledger: str | None
) -> int:
    """The call as one simple-protocol query on the driver's connection. Such a query
    returns no value to asyncpg, only its command tag: the function's count becomes
    the number of (empty) rows selected, ``SELECT <count>``."""
    arguments = [literal(holder), literal(batch) + "::json"]
    if ledger is not None:
        arguments.append(literal(ledger))
    sql = f"SELECT FROM pg_catalog.generate_series(1, aegis.ledger_write({', '.join(arguments)}))"
    import asyncpg  # here: a sidecar on SQLite never loads the driver (~3 MB)

    try:
        tag = await driver.execute(sql)
    except asyncpg.PostgresError as exc:
        code = str(exc.sqlstate or "")
        raise _ERRORS.get(code[:2], OperationalError)(_SIMPLE_SQL, None, exc) from exc
    except (asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        # The connection broke (or is unusable): the pool must not hand it out again.
        await connection.invalidate(exc)
        raise OperationalError(_SIMPLE_SQL, None, exc, connection_invalidated=True) from exc
    return int(str(tag).rsplit(" ", 1)[1])


# How a refusal is raised, by SQLSTATE class (the store retries all but the first two).
_ERRORS: dict[str, type[DBAPIError]] = {
    "23": IntegrityError,  # integrity constraint violation (another namespace: 23514)
    "22": DataError,  # data exception (a value out of its column's range)
    "42": ProgrammingError,  # syntax error or access rule violation (e.g. no grant)
}
# The statement an error names (the batch itself is not repeated into logs).
_SIMPLE_SQL = "SELECT aegis.ledger_write(<holder>, <rows>[, <ledger>])"


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error raised through SQLAlchemy, if any."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(code) if code else None


async def write_sqlite(connection: AsyncConnection, rows: Sequence[LedgerRecord]) -> int:
    """Insert a batch in ``connection``'s transaction (:mod:`.sqlite_writes`: one
    precompiled ``executemany`` on the driver's connection); returns how many were new."""
    return await write_sqlite_rows(connection, rows)


def is_permanent(exc: BaseException) -> bool:
    """True when retrying the same rows cannot succeed: constraint or data errors,
    or values our column types refuse. Connection, lock and schema problems
    (``OperationalError``, ``ProgrammingError``, …) are retried: they get fixed."""
    if sqlstate(exc) == LEDGER_MISMATCH:
        return False  # not the rows' fault: the database is another ledger
    if isinstance(exc, IntegrityError | DataError):
        return True
    if isinstance(exc, DBAPIError):
        return False
    return isinstance(exc, StatementError | TypeError | ValueError)
