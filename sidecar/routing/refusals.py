"""The refusals the router decides, each built and worded in one place.

A budget refusal is decided twice on a request's way: by the router from the
advisory budget view, and by the exchange when the real reservation fails under
concurrency. Both build it with :func:`budget_refusal`, so a client sees one
status, one code and one wording whichever step noticed.
"""

from __future__ import annotations

from decimal import Decimal

from ..contract import BudgetSpec
from ..errors import BudgetExceeded, BudgetUnavailable, NoProviderAvailable, PrivacyNoLocalProvider
from .ports import BUDGET_UNAVAILABLE


def budget_refusal(
    budget: BudgetSpec,
    reason: str,
    *,
    needed: Decimal,
    period: str | None = None,
    available: Decimal | None = None,
    skipped: str | None = None,
) -> BudgetExceeded | BudgetUnavailable:
    """The answer when ``budget`` cannot take a request of worst case ``needed``.

    ``reason`` :data:`~.ports.BUDGET_UNAVAILABLE` (the shared ledger is unreachable)
    fails closed with 503; otherwise 429. With ``skipped`` the budget is a
    ``FallbackLocal`` one that left only local providers, and none of them can
    serve the request (``skipped`` lists why): the same two answers. An unreachable
    ledger is not an exhausted budget: the client cannot fix it by spending less
    or waiting for the next period, and alerts on ``budget_exceeded`` must not
    fire for an outage, so it is 503 ``budget_unavailable`` whatever the policy.
    """
    who = f"Budget {budget.name!r} for provider {budget.provider!r}"
    if reason == BUDGET_UNAVAILABLE:
        why = "cannot be checked: the shared ledger is unreachable, so paid requests fail closed"
    else:
        when = f"for {period}" if period else "per month"
        left = "" if available is None else f", {available} USD left"
        why = (
            f"cannot cover this request (worst case {needed} USD; "
            f"limit {budget.limit_usd} USD {when}{left})"
        )
    if skipped is not None:
        why += f", and no local provider can serve it instead (skipped: {skipped})"
    if reason == BUDGET_UNAVAILABLE:
        return BudgetUnavailable(f"{who} {why}.")
    return BudgetExceeded(f"{who} {why}.")


def privacy_refusal(data_class: str, skipped: str) -> PrivacyNoLocalProvider:
    return PrivacyNoLocalProvider(
        f"Data class {data_class!r} may only be served by local providers, and "
        f"no local provider can serve this request (skipped: {skipped})."
    )


def no_provider(skipped: str) -> NoProviderAvailable:
    return NoProviderAvailable(f"No provider can serve this request (skipped: {skipped}).")
