"""A budget's period key is remembered with the instants it spans: the same key as
computing it afresh at every instant, across month, week and day ends, in the
budget's own time zone (daylight-saving changes included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aegis.sidecar.budgets.matching import BookBudget
from aegis.sidecar.contract import BudgetSpec, decode
from aegis.sidecar.contract.periods import period_of


@pytest.mark.parametrize("period", ["Monthly", "Weekly", "Daily"])
@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin", "America/Los_Angeles"])
def test_the_remembered_period_is_the_computed_one(period: str, timezone: str) -> None:
    spec = decode(
        BudgetSpec,
        {
            "name": "b",
            "provider": "openai",
            "limitUSD": "10",
            "timezone": timezone,
            "period": period,
        },
    )
    budget = BookBudget(spec, "ns")
    # Every 37 minutes over two months around a daylight-saving change (and back).
    start = datetime(2026, 10, 1, tzinfo=UTC)
    instants = [start + timedelta(minutes=37 * i) for i in range(2400)]
    for now in [*instants, *reversed(instants)]:
        assert budget.period(now) == period_of(now, budget.tz, spec.period), now
