"""One request's effects: reserve, call, fall back, settle, record.

The router decides (pure); this package carries the decision out against the
runtime: budget reservations, provider calls with fallback, the real cost, the
ledger row and the metrics.
"""
