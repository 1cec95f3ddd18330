"""Rate limits on the request path: admit the request on its route's limits, each
call on its budgets' limits, and settle what was used.

- Before the first call: one request slot and the token estimate of the route's
  ``rateLimits``; no room: 429 ``rate_limit_exceeded`` with ``Retry-After`` and the
  rate-limit headers, and a ``refused`` ledger row, as for other refusals.
- Before each call: the limits of the budgets the call is charged to, those this
  request does not hold yet. No room: the candidate is passed over (reason
  ``rate_limited``) like one whose budget is spent; when nothing else answers, 429.
- When a call starts, the request slots become busy for a window; when the request
  is recorded, the tokens used (from usage; unknown: the estimate) stay busy and the
  rest of the estimate comes back.

Retries inside one call (the adapter's) and fallbacks take no further slot of the
limits already held; a client's retry is a new request.
"""

from __future__ import annotations

from ..errors import RateLimited
from ..ledger import Status
from ..limits import RateRefused
from ..limits.headers import rate_headers, retry_headers
from ..limits.scopes import budget_demands, route_demands
from ..routing import Candidate
from .record import Exchange


def refusal(outcome: RateRefused) -> RateLimited:
    """The 429 for ``outcome``: what was over, and when to try again."""
    key = outcome.key
    scope = f"{key.kind.lower()} {key.namespace + '/' if key.namespace else ''}{key.name}"
    error = RateLimited(
        f"Rate limit reached for {scope} on {key.unit.value} per min: no room for "
        f"{outcome.needed} now. Please try again in {outcome.retry_after:.1f}s.",
        headers={**retry_headers(outcome.retry_after), **rate_headers(outcome.states)},
    )
    error.limit_type = key.unit.value
    return error


def _count(exchange: Exchange, outcome: RateRefused) -> None:
    exchange.runtime.metrics.refusals.labels("rate_limit_exceeded").inc()
    exchange.rate_states = outcome.states


async def admit_route(exchange: Exchange) -> None:
    """The route's limits; raises the 429 (after writing the request's row)."""
    config = exchange.snapshot.config
    demands = route_demands(config, exchange.facts, exchange.decision.candidates)
    if not demands:
        return
    outcome = await exchange.runtime.limits.acquire(demands)
    if isinstance(outcome, RateRefused):
        _count(exchange, outcome)
        answer = refusal(outcome)
        exchange.fallbacks.append(f"rate_limit:{outcome.key.unit.value}")
        exchange.record(candidate=None, model="", status=Status.REFUSED, http_status=429)
        raise answer.with_headers(exchange.headers(None, None))
    exchange.rates.append(outcome)
    exchange.rate_states = outcome.states()


async def admit_call(exchange: Exchange, candidate: Candidate) -> RateLimited | None:
    """The limits of the budgets ``candidate``'s call is charged to; the 429 to
    answer if nothing else serves, ``None`` when admitted."""
    config = exchange.snapshot.config
    every = budget_demands(config, exchange.facts, candidate, ())
    if not every:
        return None
    name = candidate.provider.name
    keys = {key for key, _ in every}
    for held in exchange.rates:  # limits held already cover this call too
        if held.providers is not None and held.limit_keys() & keys:
            held.providers = held.providers | {name}
    taken = {key for admission in exchange.rates for key in admission.limit_keys()}
    demands = [(key, amount) for key, amount in every if key not in taken]
    if not demands:
        return None
    outcome = await exchange.runtime.limits.acquire(demands)
    if isinstance(outcome, RateRefused):
        _count(exchange, outcome)
        return refusal(outcome)
    outcome.providers = frozenset({name})
    exchange.rates.append(outcome)
    exchange.rate_states = exchange.rate_states + outcome.states()
    return None


def called(exchange: Exchange) -> None:
    """A call starts: every admission of the request counts it (once)."""
    for admission in exchange.rates:
        admission.called()
