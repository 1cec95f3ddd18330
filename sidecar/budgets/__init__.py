"""Budgets inside one sidecar: reserve the worst case, settle the real cost.

A :class:`BudgetBook` (:mod:`.book`) keeps one account (:mod:`.accounts`) per
budget and period, for the budgets whose filters match each call (:mod:`.matching`:
provider, model globs, data class, ServiceAccount; each budget in its own Daily,
Weekly or Monthly period); its money comes from a :class:`BudgetSource` (:mod:`.sources`):
the local ledger (standalone) or leases on the shared PostgreSQL ledger
(:mod:`.leases`, with their settings and per-slot state in :mod:`.lease_slots`, and
the reconciling of the book with the database's answers in :mod:`.lease_reconcile`):
many sidecars spending one budget without ever overspending it. The book is the
router's budget view (:class:`~aegis.sidecar.routing.ports.BudgetView`).
"""

from .accounts import Allowance, BudgetSnapshot, Exceeded, Reservation, ReservationState
from .book import BudgetBook
from .lease_slots import LeaseSettings
from .leases import LeaseBudgetSource
from .sources import BudgetSource, LocalBudgetSource

__all__ = [
    "Allowance",
    "BudgetBook",
    "BudgetSnapshot",
    "BudgetSource",
    "Exceeded",
    "LeaseBudgetSource",
    "LeaseSettings",
    "LocalBudgetSource",
    "Reservation",
    "ReservationState",
]
