"""The router: request facts + config + budget and health views -> a decision.

Pure: no I/O, no clock, no randomness (the caller passes the random number). The
stateful parts it consults (budgets, circuit breakers) come in through the small
read-only ports in :mod:`.ports`.
"""
