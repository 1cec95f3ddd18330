"""Which rate limits a request and each of its calls fall under, and what they use.

- The route's ``rateLimits`` (key ``Route/<namespace>/<route>``): one request slot
  and the token estimate per request, taken before the first call; a fallback to
  another candidate of the same request takes no more.
- A budget's ``rateLimits`` (key ``Budget/<budget namespace>/<name>``, the namespace
  ``''`` for a cluster budget): taken by the first call of a request that the budget
  applies to (its provider, model and data-class filters; a ServiceAccount filter is
  not known here, so it matches); later calls of the same request under it take no
  more.

The token estimate of a call is its worst case, as for its price: the prompt bound
plus the completion cap in force (the client's, else the provider's default) per
choice, for the dearest of the candidate's models; the route's is the largest over
the candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..contract import RateLimitSpec, RateUnit, SidecarConfig
from ..request import RequestFacts
from ..routing import Candidate
from .limiter import Demand
from .pool import PoolKey

ROUTE = "Route"
BUDGET = "Budget"


def _keys(kind: str, namespace: str, name: str, spec: RateLimitSpec) -> list[tuple[PoolKey, int]]:
    found = []
    for unit in RateUnit:
        limit = spec.limit(unit)
        if limit is not None:
            found.append((PoolKey(kind, namespace, name, unit), limit))
    return found


def limits_in_force(config: SidecarConfig) -> list[tuple[PoolKey, int]]:
    """Every limit of ``config``: the route's and its budgets'."""
    identity = config.identity
    found: list[tuple[PoolKey, int]] = []
    if config.rate_limits is not None:
        found += _keys(ROUTE, identity.namespace, identity.route, config.rate_limits)
    for budget in config.budgets:
        if budget.rate_limits is not None:
            key = budget.key(identity.namespace)
            found += _keys(BUDGET, key.namespace, key.name, budget.rate_limits)
    return found


def call_tokens(facts: RequestFacts, candidate: Candidate) -> int:
    """The worst case of one call: prompt bound + completion cap x choices."""
    completion = (candidate.max_tokens_to_send or 0) * facts.choices
    prompt = max((facts.prompt_tokens_bound(m) for m in candidate.models), default=0)
    return prompt + completion


def _demands(
    kind: str, namespace: str, name: str, spec: RateLimitSpec, tokens: int
) -> list[Demand]:
    found: list[Demand] = []
    for key, _ in _keys(kind, namespace, name, spec):
        found.append((key, 1 if key.unit is RateUnit.REQUESTS else max(tokens, 1)))
    return found


def route_demands(
    config: SidecarConfig, facts: RequestFacts, candidates: Sequence[Candidate]
) -> list[Demand]:
    """What the request takes of the route's limits (nothing without them)."""
    if config.rate_limits is None:
        return []
    tokens = max((call_tokens(facts, c) for c in candidates), default=0)
    identity = config.identity
    return _demands(ROUTE, identity.namespace, identity.route, config.rate_limits, tokens)


def budget_demands(
    config: SidecarConfig, facts: RequestFacts, candidate: Candidate, taken: Iterable[PoolKey]
) -> list[Demand]:
    """What a call of ``candidate`` takes of the limits of the budgets it is charged
    to, leaving out limits this request already holds (``taken``)."""
    held = set(taken)
    tokens = call_tokens(facts, candidate)
    found: list[Demand] = []
    provider = candidate.provider
    for budget in config.budgets:
        if budget.rate_limits is None or not budget.applies(
            provider.name,
            local=provider.is_local,
            models=candidate.models,
            data_class=facts.data_class,
        ):
            continue
        key = budget.key(config.identity.namespace)
        demands = _demands(BUDGET, key.namespace, key.name, budget.rate_limits, tokens)
        found += [d for d in demands if d[0] not in held]
    return found
