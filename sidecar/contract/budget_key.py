"""Who a budget is: ``(scope, namespace, name)``, the key of its money in the ledger.

A namespaced ``LLMBudget`` is ``(Namespace, <its namespace>, <name>)``; a
cluster-wide budget is ``(Cluster, "", <name>)``. Two budgets of the same name in
two namespaces are two keys, so they never share money. On the wire (a ledger
row's charges, the spool) a key is ``Scope/namespace/name``: neither part can
hold a ``/`` or a ``,`` (DNS labels), so the encoding is unambiguous.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class BudgetScope(StrEnum):
    """Where a budget's limit applies: one namespace, or the whole cluster."""

    NAMESPACE = "Namespace"
    CLUSTER = "Cluster"


class BudgetKey(NamedTuple):
    scope: BudgetScope
    namespace: str  # "" for the cluster scope
    name: str

    @property
    def encoded(self) -> str:
        return f"{self.scope.value}/{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return self.encoded

    @classmethod
    def parse(cls, text: str) -> BudgetKey:
        """The inverse of :attr:`encoded`; ``ValueError`` for anything else."""
        parts = text.split("/")
        if len(parts) != 3 or not parts[2]:
            raise ValueError(f"not a budget key (Scope/namespace/name): {text!r}")
        scope = BudgetScope(parts[0])
        if (scope is BudgetScope.CLUSTER) != (parts[1] == ""):
            raise ValueError(f"a {scope.value} budget key with namespace {parts[1]!r}")
        return cls(scope, parts[1], parts[2])
