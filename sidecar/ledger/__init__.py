"""The cost ledger: one row per request, in SQLite (standalone) or PostgreSQL.

The sidecar's side needs no database library beyond the drivers: :class:`LedgerStore`
writes rows (batched, idempotent, off the request path) with its crash-safe
:mod:`.spool`, over :mod:`.database` (aiosqlite or asyncpg); :mod:`.leases` calls the
budget-lease functions; :mod:`.records` is the row, :mod:`.urls` where it goes.

The operator's and the CLI's side uses SQLAlchemy: the schema (:mod:`.models`,
migrated by :func:`aegis.sidecar.ledger.migrate.migrate`), engines
(:mod:`.db`), the read side (:mod:`.report`, :mod:`.budget_status`,
:mod:`.rollout_stats`, over :mod:`.source` and :mod:`.tables`) and database roles
(:mod:`.roles`). Those are imported from their modules, never from here, so that a
sidecar never loads SQLAlchemy. Money, periods and the arm come from the contract.
"""

from .database import DatabaseError, LedgerUnavailableError
from .records import LedgerRecord, Status
from .store import LedgerStore
from .urls import ledger_url

__all__ = [
    "DatabaseError",
    "LedgerRecord",
    "LedgerStore",
    "LedgerUnavailableError",
    "Status",
    "ledger_url",
]
