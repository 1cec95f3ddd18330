"""The two in-memory indices kopf keeps for cross-object work, as the controllers read them.

- budgets: namespace (or ``*``) → the LLMBudgets that may apply to routes there;
- routes: namespace → the routes there and their provider names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .render import ALL_NAMESPACES, AppliedBudget


@dataclass(frozen=True, slots=True)
class RouteRef:
    """A route as the route index keeps it: enough to find the budgets' routes."""

    namespace: str
    name: str
    providers: tuple[str, ...]


BudgetIndex = Mapping[str, Iterable[AppliedBudget]]
RouteIndex = Mapping[str, Iterable[RouteRef]]


def budgets_for(index: BudgetIndex, namespace: str) -> list[AppliedBudget]:
    """Budgets whose scope may include routes of ``namespace``."""
    found = list(index.get(namespace, ()))
    if namespace != ALL_NAMESPACES:
        found += list(index.get(ALL_NAMESPACES, ()))
    return found


def refs_in(index: RouteIndex, namespaces: Iterable[str]) -> list[RouteRef]:
    """The known routes of ``namespaces`` (``*``: all)."""
    wanted = set(namespaces)
    keys = list(index) if ALL_NAMESPACES in wanted else [ns for ns in wanted if ns in index]
    return [ref for key in keys for ref in list(index.get(key, ()))]
