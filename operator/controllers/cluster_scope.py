"""Which namespaces a ``ClusterLLMBudget`` reaches, and the budgets a route sees.

Pure: works on kopf's in-memory indices as the handlers hand them over.

- the namespace index: namespace name → its labels (kopf watches Namespaces; no
  annotation or finalizer is ever written to them);
- the cluster budget index: ``*`` → every valid ClusterLLMBudget, parsed.

:class:`BudgetView` puts the two beside the LLMBudget index so that a route's
reconcile asks one mapping for "the budgets that may apply in my namespace" and
gets its namespace's LLMBudgets, the platform's, and every ClusterLLMBudget whose
selector matches the namespace's labels right now.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from ..api.cluster import ClusterLLMBudgetSpec
from .indices import BudgetIndex, RouteIndex
from .render import ALL_NAMESPACES, AppliedBudget

Labels = Mapping[str, str]
NamespaceIndex = Mapping[str, Iterable[Labels]]


def parse_cluster_budget(name: str, spec: Mapping[str, object] | None) -> ClusterLLMBudgetSpec:
    return ClusterLLMBudgetSpec.model_validate({**(spec or {}), "name": name})


@dataclass(frozen=True, slots=True)
class ClusterBudgetRef:
    """A valid ClusterLLMBudget as the index keeps it."""

    name: str
    spec: ClusterLLMBudgetSpec

    def applied(self, namespaces: Iterable[str]) -> AppliedBudget:
        """The budget as routes of ``namespaces`` see it (keyed Cluster/""/name)."""
        return AppliedBudget(
            namespace="",
            name=self.name,
            spec=self.spec.budget(),
            routes=frozenset(),
            scope=frozenset(namespaces),
        )

    def selects(self, namespace: str, namespaces: NamespaceIndex) -> bool:
        labels = labels_of(namespaces, namespace)
        return labels is not None and self.spec.selects(labels)


ClusterBudgetIndex = Mapping[str, Iterable[ClusterBudgetRef]]


def cluster_ref(name: str, spec: Mapping[str, object] | None) -> ClusterBudgetRef | None:
    """The budget for the index; ``None`` for an invalid spec (it applies nowhere)."""
    try:
        return ClusterBudgetRef(name, parse_cluster_budget(name, spec))
    except ValidationError:
        return None


def labels_of(namespaces: NamespaceIndex, namespace: str) -> Labels | None:
    """The labels of a namespace the index knows (``None``: no such namespace)."""
    found = list(namespaces.get(namespace, ()))
    return found[0] if found else None


def selected(spec: ClusterLLMBudgetSpec, namespaces: NamespaceIndex) -> list[str]:
    """The namespaces the budget's selector matches now, sorted."""
    return sorted(ns for ns in namespaces if spec.selects(labels_of(namespaces, ns) or {}))


def spenders(spec: ClusterLLMBudgetSpec, namespaces: NamespaceIndex) -> list[str]:
    """Who the ledger lets spend the budget: ``*`` without a selector (every
    namespace, also one created before the operator has seen it), else the
    namespaces it matches now."""
    selector = spec.namespace_selector
    if selector is None or not (selector.match_labels or selector.match_expressions):
        return [ALL_NAMESPACES]
    return selected(spec, namespaces)


def cluster_budgets_of(
    index: ClusterBudgetIndex, namespaces: NamespaceIndex, namespace: str
) -> frozenset[str]:
    """Names of the ClusterLLMBudgets that reach ``namespace`` now."""
    return frozenset(
        ref.name for ref in index.get(ALL_NAMESPACES, ()) if ref.selects(namespace, namespaces)
    )


class BudgetView(Mapping[str, list[AppliedBudget]]):
    """The LLMBudget index plus the ClusterLLMBudgets, per namespace: what
    :func:`~.indices.budgets_for` reads for a route."""

    def __init__(
        self, budgets: BudgetIndex, clusters: ClusterBudgetIndex, namespaces: NamespaceIndex
    ) -> None:
        self._budgets = budgets
        self._clusters = clusters
        self._namespaces = namespaces

    def __getitem__(self, namespace: str) -> list[AppliedBudget]:
        found = list(self._budgets.get(namespace, ()))
        if namespace != ALL_NAMESPACES:
            found += [
                ref.applied([namespace])
                for ref in self._clusters.get(ALL_NAMESPACES, ())
                if ref.selects(namespace, self._namespaces)
            ]
        if not found and namespace not in self._budgets:
            raise KeyError(namespace)
        return found

    def __iter__(self) -> Iterator[str]:
        keys = set(self._budgets) | set(self._namespaces)
        return iter(sorted(keys))

    def __len__(self) -> int:
        return len(set(self._budgets) | set(self._namespaces))


@dataclass(frozen=True, slots=True)
class Indices:
    """kopf's indices as a cluster-budget or namespace event needs them."""

    routes: RouteIndex
    budgets: BudgetIndex
    clusters: ClusterBudgetIndex
    namespaces: NamespaceIndex

    @property
    def view(self) -> BudgetView:
        """Every budget a route may render: its namespace's, the platform's, the cluster's."""
        return BudgetView(self.budgets, self.clusters, self.namespaces)
