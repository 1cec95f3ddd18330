"""Which budgets apply to a call: by their filters (provider, model globs, data
class, this sidecar's ServiceAccount), not by provider alone; and each budget's own
period (a day, an ISO week or a month in its time zone)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ..contract import BudgetSpec, OnExceeded
from ..contract.periods import period_bounds, period_of, zone

__all__ = ["BookBudget", "Matcher"]

#: Distinct call shapes remembered per config before the cache starts over.
MAX_SHAPES = 4096


class BookBudget:
    """A budget as the book uses it: its spec, ledger key, zone and period kind."""

    __slots__ = ("_current", "key", "notify", "spec", "tz")

    def __init__(self, spec: BudgetSpec, namespace: str) -> None:
        self.spec = spec
        self.key = spec.key(namespace).encoded
        self.tz = zone(spec.timezone)  # ValueError for an unknown zone
        self.notify = spec.on_exceeded is OnExceeded.NOTIFY
        # The period last asked for and the instants it spans, [start, end) in UTC:
        # a request asks two or three times, nearly always for the same period.
        self._current: tuple[datetime, datetime, str] | None = None

    def period(self, now: datetime) -> str:
        """The key of this budget's period containing ``now``."""
        current = self._current
        if current is not None and now.tzinfo is not None and current[0] <= now < current[1]:
            return current[2]  # (a naive ``now`` gets period_of's own error below)
        key = period_of(now, self.tz, self.spec.period)
        start, end = period_bounds(key, self.tz)
        self._current = (start, end, key)
        return key

    def same_spend(self, other: BudgetSpec) -> bool:
        """Does ``other`` count the same calls in the same periods (only its limit,
        alerts or onExceeded may differ)?"""
        mine = self.spec
        return (
            mine.provider_names == other.provider_names
            and (mine.models, mine.data_classes) == (other.models, other.data_classes)
            and mine.service_accounts == other.service_accounts
            and (mine.period, self.tz) == (other.period, zone(other.timezone))
        )


class Matcher:
    """The budgets that apply to a call, cached per call shape (provider, models,
    data class): the request path pays one dict lookup."""

    __slots__ = ("_budgets", "_local", "_service_account", "_shapes")

    def __init__(
        self,
        budgets: Iterable[BookBudget],
        service_account: str | None,
        local_providers: frozenset[str],
    ) -> None:
        self._budgets = tuple(budgets)
        self._service_account = service_account
        self._local = local_providers
        self._shapes: dict[tuple[str, tuple[str, ...], str | None], tuple[BookBudget, ...]] = {}

    def applying(
        self, provider: str, models: tuple[str, ...], data_class: str | None
    ) -> tuple[BookBudget, ...]:
        shape = (provider, models, data_class)
        found = self._shapes.get(shape)
        if found is None:
            local = provider in self._local
            found = tuple(
                b
                for b in self._budgets
                if b.spec.applies(
                    provider,
                    local=local,
                    models=models,
                    data_class=data_class,
                    service_account=self._service_account,
                )
            )
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()
            self._shapes[shape] = found
        return found
