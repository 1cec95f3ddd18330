"""What one request is charged: reserve the worst case, settle the real cost.

Each candidate's worst case is reserved on its provider's budgets before the call;
the reservation is released when the call fails and settled to the real cost (from
the usage the provider reported) when it answers. Without usage, or when a stream
breaks, the charge errs on the side of what the provider may have billed.
"""

from __future__ import annotations

from decimal import Decimal

from ..adapters import Usage
from ..budgets import Exceeded, Reservation
from ..contract import OnExceeded
from ..contract.money import ZERO
from ..errors import AegisError
from ..request import cost, price_for
from ..routing import REASON_BUDGET, Candidate, budget_refusal
from .record import Exchange


class CandidateSkipped(Exception):
    """A candidate is passed over before any call (the reason in ``args[0]``);
    ``refusal`` is the answer if no candidate after it serves the request."""

    def __init__(self, reason: str, refusal: AegisError | None = None) -> None:
        super().__init__(reason)
        self.refusal = refusal


async def reserve(exchange: Exchange, candidate: Candidate) -> Reservation | None:
    """Reserve the worst case in every budget that applies to the call (by provider,
    the models the candidate may use and the data class); ``None`` for a free
    provider without budgets.

    A budget that cannot cover it raises the budget refusal (``Reject``) or
    :class:`CandidateSkipped` (``FallbackLocal``: from now on only local providers).
    Suspends only when a shared-budget lease must be topped up first."""
    if candidate.worst_case_usd <= ZERO and not exchange.snapshot.config.budgets_for(
        candidate.provider.name
    ):
        return None
    outcome = await exchange.runtime.budgets.acquire(
        candidate.provider.name,
        candidate.worst_case_usd,
        models=candidate.models,
        data_class=exchange.facts.data_class,
    )
    if isinstance(outcome, Exceeded):
        budget = outcome.budget
        reject = budget.on_exceeded is OnExceeded.REJECT
        refusal = budget_refusal(
            budget,
            outcome.reason,
            needed=outcome.needed,
            period=outcome.period,
            available=outcome.available,
            skipped=None if reject else _no_local(exchange, candidate, outcome.reason),
        )
        if reject:
            raise refusal
        exchange.local_only_after_budget = True
        raise CandidateSkipped(outcome.reason, refusal)
    return outcome


def _no_local(exchange: Exchange, candidate: Candidate, reason: str) -> str | None:
    """A ``FallbackLocal`` budget leaves only local providers: when the route has none,
    what was skipped (as the router words it: the client learns that nothing local
    could serve the request instead); ``None`` when a local one comes next."""
    candidates = exchange.decision.candidates
    after = candidates[candidates.index(candidate) + 1 :]
    if any(c.provider.is_local for c in after):
        return None
    skipped = [f"{candidate.provider.name}: {reason}"]
    skipped += [f"{c.provider.name}: {REASON_BUDGET}" for c in after]
    return ", ".join(skipped)


def settle(exchange: Exchange, reservation: Reservation | None, amount: Decimal) -> Decimal:
    """Charge ``amount``; returns what was charged (as the ledger will hold it)."""
    if reservation is None:
        return amount
    return exchange.runtime.budgets.settle(reservation, amount)


def release(exchange: Exchange, reservation: Reservation | None) -> None:
    if reservation is not None:
        exchange.runtime.budgets.release(reservation)


def period_of(exchange: Exchange, reservation: Reservation | None, provider: str) -> str:
    """The month the request's row records (each budget's own period is in its charges)."""
    if reservation is not None:
        return reservation.period
    return exchange.runtime.budgets.period(provider)


def charges_of(reservation: Reservation | None) -> str:
    """The budgets (``Scope/namespace/name@period``) the request's row is charged to."""
    return reservation.charges if reservation is not None else ""


def actual_cost(candidate: Candidate, model: str, usage: Usage | None) -> Decimal:
    """The real cost from usage; without usage, the reserved worst case (never less)."""
    if usage is None:
        return candidate.worst_case_usd
    price = price_for(candidate.provider, model) or candidate.price
    if price is None:
        return ZERO
    return cost(price, usage.prompt_tokens, usage.completion_tokens)


def partial_cost(exchange: Exchange, candidate: Candidate, model: str, chunks: int) -> Decimal:
    """A broken stream without usage: the worst case when nothing was forwarded, else
    the prompt bound + one token per chunk, capped by the reservation (never below
    what could have been generated)."""
    if chunks == 0:
        return candidate.worst_case_usd
    estimate = Usage(exchange.facts.prompt_tokens_bound(model), chunks)
    return min(actual_cost(candidate, model, estimate), candidate.worst_case_usd)
