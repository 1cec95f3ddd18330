"""The cost ledger: one row per request, in SQLite (standalone) or PostgreSQL.

Write side: :class:`LedgerStore` (batched, idempotent, off the request path).
Read side: :mod:`aegis.sidecar.ledger.report` (aggregation, budget utilisation,
CSV/JSON export). Schema: :mod:`aegis.sidecar.ledger.models`, migrated by
:func:`aegis.sidecar.ledger.migrate.migrate` (not re-exported here, so that
``aegis.sidecar.ledger.migrate`` stays the module). The operator imports the
models and the read side from here.
"""

from aegis.sidecar.ledger.db import LedgerUnavailableError, create_engine, ledger_url
from aegis.sidecar.ledger.models import Arm, LedgerEntry, LedgerRecord, Status
from aegis.sidecar.ledger.periods import period_of, shift_period
from aegis.sidecar.ledger.store import LedgerStore
from aegis.sidecar.ledger.types import quantize_usd

__all__ = [
    "Arm",
    "LedgerEntry",
    "LedgerRecord",
    "LedgerStore",
    "LedgerUnavailableError",
    "Status",
    "create_engine",
    "ledger_url",
    "period_of",
    "quantize_usd",
    "shift_period",
]
