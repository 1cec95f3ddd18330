"""The statements that write a batch of ledger rows, per backend.

SQLite (standalone, one writer): one prepared ``INSERT … ON CONFLICT (request_id)
DO NOTHING`` run for the batch's rows (:mod:`.sqlite_writes`).
PostgreSQL (shared, many writers): one call of ``aegis.ledger_write`` (migration
0003), which inserts the batch with the same conflict rule and, in the same
transaction, charges the newly inserted rows to the writing sidecar's budget
leases. The namespace's database role needs only EXECUTE on it (rows of another
namespace are refused as a check violation: permanent, so the store isolates that
row instead of retrying the batch for ever). The batch travels as one JSON array of
the rows' spool encodings, so building it costs a string join instead of
encoding twenty arrays value by value.

The call is one simple-protocol query with the arguments as escaped literals: one
round trip, directly and behind a transaction-mode pooler. A parameterised statement
costs two there (statements are never prepared by name), Parse/Describe then
Bind/Execute, and the server connection stays assigned to the sidecar in between,
waiting for its event loop: with 200 busy sidecars on 20 server connections, half
of them sat in that wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from .database import DatabaseError, PostgresConnection, SqliteConnection
from .records import LedgerRecord
from .sqlite_writes import write_sqlite_rows

__all__ = [
    "LEDGER_MISMATCH",
    "MAX_ROWS_PER_STATEMENT",
    "is_permanent",
    "sqlstate",
    "write_postgres",
    "write_sqlite",
]

# A batch is one statement; its size is bounded so that one refused row costs at
# most this many single-row retries (:meth:`LedgerStore._write_one_by_one`).
MAX_ROWS_PER_STATEMENT = 1000
# aegis.ledger_write(holder, rows, ledger) refuses rows bound to another ledger (0005).
LEDGER_MISMATCH = "55000"


def check_rows(rows: Sequence[LedgerRecord]) -> None:
    """The checks the ledger's column types make (Money, UTCDateTime), for rows that
    go to PostgreSQL as JSON: float money and naive instants are refused."""
    for record in rows:
        if isinstance(record.cost_usd, bool) or not isinstance(record.cost_usd, Decimal | int):
            raise TypeError(f"money must be Decimal, got {type(record.cost_usd).__name__}")
        if record.created_at.utcoffset() is None:
            raise ValueError("ledger timestamps must be timezone-aware")


def literal(value: str) -> str:
    """``value`` as an SQL string constant: ``E'…'`` with backslashes and quotes
    doubled, which means the same whatever ``standard_conforming_strings`` says."""
    if "\x00" in value:
        raise ValueError("ledger text cannot hold NUL characters")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


async def write_postgres(
    connection: PostgresConnection,
    holder: str,
    rows: Sequence[LedgerRecord],
    bodies: Sequence[bytes],
    *,
    ledger: str | None = None,
) -> int:
    """Insert and charge one batch (``bodies``: :func:`~aegis.sidecar.ledger.spool.encode_body`
    of each row); returns how many rows were new. With ``ledger`` (the ledger id the
    rows are bound to, migration 0005) the database refuses the batch unless it is
    that ledger (SQLSTATE :data:`LEDGER_MISMATCH`), before inserting or charging.

    A simple-protocol query returns no value, only its command tag: the function's
    count becomes the number of (empty) rows selected, ``SELECT <count>``."""
    check_rows(rows)
    batch = (b"[" + b",".join(bodies) + b"]").decode()
    arguments = [literal(holder), literal(batch) + "::json"]
    if ledger is not None:
        arguments.append(literal(ledger))
    sql = f"SELECT FROM pg_catalog.generate_series(1, aegis.ledger_write({', '.join(arguments)}))"
    tag = await connection.simple(sql)
    return int(tag.rsplit(" ", 1)[1])


async def write_sqlite(connection: SqliteConnection, rows: Sequence[LedgerRecord]) -> int:
    """Insert a batch in ``connection``'s transaction; returns how many were new."""
    return await write_sqlite_rows(connection, rows)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a failed statement, if the database gave one."""
    return exc.sqlstate if isinstance(exc, DatabaseError) else None


def is_permanent(exc: BaseException) -> bool:
    """True when retrying the same rows cannot succeed: constraint or data errors,
    or values the ledger's columns refuse. Connection, lock and schema problems
    (unreachable, locked, no grant yet, schema behind) are retried: they get fixed."""
    if isinstance(exc, DatabaseError):
        return exc.permanent  # another ledger (LEDGER_MISMATCH) is not: class 55
    return isinstance(exc, TypeError | ValueError)
