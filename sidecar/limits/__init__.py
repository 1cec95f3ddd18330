"""Rate limits: requests and tokens per minute, exact across every sidecar of a scope.

Each limit of R per window is R slots (:mod:`.pool`); a slot used at time t is busy
until t + window. The :class:`RateLimiter` (:mod:`.limiter`) admits a request on every
limit it falls under, or on none, without I/O; the slots a sidecar holds come from
the whole limit standalone (:class:`LocalSlots`) or from leases on the shared
PostgreSQL ledger (:mod:`.leases`), taken, renewed and given back in the background
like budget leases. :mod:`.scopes` says which limits a request and a call fall
under and what they are estimated to use. Guarantee and bound: docs/ledger.md.
"""

from .limiter import Admission, LocalSlots, PoolState, RateLimiter, RateRefused, SlotSource
from .pool import DEFAULT_WINDOW, PoolKey, SlotPool

__all__ = [
    "DEFAULT_WINDOW",
    "Admission",
    "LocalSlots",
    "PoolKey",
    "PoolState",
    "RateLimiter",
    "RateRefused",
    "SlotPool",
    "SlotSource",
]
