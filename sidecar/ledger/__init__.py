"""The cost ledger: one row per request, in SQLite (standalone) or PostgreSQL.

Write side: :class:`LedgerStore` (batched, idempotent, off the request path),
with its crash-safe :mod:`.spool` and the budget-lease SQL calls in :mod:`.leases`.
Read side: :mod:`.report` (aggregation, budget utilisation, CSV/JSON export),
:mod:`.budget_status` (shared budgets), :mod:`.rollout_stats` (per-arm statistics),
over :mod:`.source` (a URL or an engine) and :mod:`.tables` (text tables).
Schema: :mod:`.models` and :mod:`.summary` (totals per month), migrated by
:func:`aegis.sidecar.ledger.migrate.migrate`; database roles in :mod:`.roles`. Modules
whose name is also a function's (``migrate``, ``report``, ``budget_status``) are not
re-exported here, so that the name stays the module; money, periods and the arm come
from the contract. The operator imports the models and the read side.
"""

from .db import LedgerUnavailableError, create_engine, ledger_url
from .models import LedgerEntry, LedgerRecord, Status
from .store import LedgerStore
from .summary import LedgerSummary

__all__ = [
    "LedgerEntry",
    "LedgerRecord",
    "LedgerStore",
    "LedgerSummary",
    "LedgerUnavailableError",
    "Status",
    "create_engine",
    "ledger_url",
]
