"""The statements of a lease source (:mod:`aegis.sidecar.budgets.leases`): one round
trip each, counted, and the fail-closed switch they drive."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..ledger import leases
from ..ledger.database import Connection, Database
from ..routing.ports import BUDGET_UNAVAILABLE
from .book import BudgetBook
from .lease_slots import LeaseSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class LeaseCalls:
    """Runs lease statements for a holder and blocks its book while they fail."""

    def __init__(self, database: Database, settings: LeaseSettings) -> None:
        self.database = database  # autocommit: each statement is its own transaction
        self.settings = settings
        self._book: BudgetBook | None = None
        self._wake = asyncio.Event()
        self._taken_over = asyncio.Event()
        self.available = True
        self.statements: dict[str, int] = {}  # round trips by kind, for metrics
        self.failures = 0

    async def _call(self, kind: str, work: Callable[[Connection], Awaitable[T]]) -> T | None:
        """One statement, one round trip; ``None`` (and blocked) when it fails. The
        database answering that a budget is not granted is an answer, not a failure:
        :class:`~aegis.sidecar.ledger.leases.NotGranted` goes to the caller."""
        self.statements[kind] = self.statements.get(kind, 0) + 1
        try:
            async with asyncio.timeout(self.settings.statement_timeout):
                async with self.database.connect() as connection:
                    result = await work(connection)
        except leases.NotGranted:
            self._set_available(True)
            raise
        except Exception as exc:
            self.failures += 1
            if self.available:
                log.error("budget lease %s failed, paid providers fail closed: %s", kind, exc)
            self._set_available(False)
            return None
        self._set_available(True)
        return result

    def _set_available(self, available: bool) -> None:
        if available and not self._taken_over.is_set():
            return  # not before the previous life's leases are closed
        changed = available != self.available
        self.available = available
        if self._book is not None:
            self._book.blocked = None if available else BUDGET_UNAVAILABLE
        if changed and available:
            log.info("budget leases available again")

    def ledger_health(self, healthy: bool) -> None:
        """:class:`LedgerStore` ``on_health``: a failed write blocks at once; a
        successful one only wakes the probe (a lease statement must succeed)."""
        if not healthy:
            self._set_available(False)
        self._wake.set()
