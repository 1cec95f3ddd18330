"""The cost ledger: one row per request, in SQLite (standalone) or PostgreSQL.

Write side: :class:`LedgerStore` (batched, idempotent, off the request path).
Read side: :mod:`aegis.sidecar.ledger.report` (aggregation, budget utilisation,
CSV/JSON export). Schema: :mod:`aegis.sidecar.ledger.models`, migrated by
:func:`aegis.sidecar.ledger.migrate.migrate` (not re-exported here, so that
``aegis.sidecar.ledger.migrate`` stays the module). The operator imports the
models and the read side from here.
"""

from ..contract import Arm
from ..contract.money import quantize_usd
from ..contract.periods import period_of, shift_period
from .db import LedgerUnavailableError, create_engine, ledger_url
from .models import LedgerEntry, LedgerRecord, Status
from .store import LedgerStore

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
