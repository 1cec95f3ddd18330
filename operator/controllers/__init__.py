"""Reconcilers, one per kind: read once, decide in pure code, then apply.

``LLMRoute`` -> its ConfigMap and status; ``LLMBudget`` -> its status from the
ledger; the rollout controller -> the next step from per-arm ledger figures.
"""
