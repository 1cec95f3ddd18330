"""Budgets inside one sidecar: reserve the worst case, settle the real cost.

A :class:`BudgetBook` keeps one account per budget and period; its money comes
from a source: the local ledger (standalone) or leases on the shared PostgreSQL
ledger (many sidecars spending one budget without ever overspending it).
"""
