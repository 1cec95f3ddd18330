"""``ClusterLLMBudget``: one limit shared by the namespaces its selector picks.

A cluster-scoped kind, so only who may write cluster objects (the platform team,
through RBAC on ``clusterllmbudgets``) can set or change it; no namespace can widen,
raise or remove it. Its spec is the sidecar's budget (period, limit, filters, what
happens when exceeded) plus ``namespaceSelector``, a label selector over the
Namespace objects themselves. Its money is keyed ``(Cluster, "", <name>)`` in the
ledger, and its spenders are the namespaces the selector matches now: the operator
follows namespace labels and namespaces coming and going.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ConfigDict, Field

from aegis.sidecar.contract import BudgetScope
from aegis.sidecar.contract.schema import BudgetSpec

from .extras import extra
from .specs import LabelSelector

#: BudgetSpec fields a ClusterLLMBudget does not expose: who it is comes from its
#: metadata and kind; a ServiceAccount filter names accounts of one namespace.
CLUSTER_DROPPED = ("name", "scope", "namespace", "serviceAccounts")


class NamespaceSelector(LabelSelector):
    """Which namespaces spend this budget, by the labels of the Namespace objects.

    All matchLabels and matchExpressions must hold; an empty selector (or none)
    selects every namespace. Kubernetes labels every namespace with
    ``kubernetes.io/metadata.name: <name>``, so a budget can name namespaces too."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a Namespace with ``labels`` is selected (Kubernetes semantics)."""
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for requirement in self.match_expressions:
            present = requirement.key in labels
            value = labels.get(requirement.key)
            if requirement.operator == "In" and value not in requirement.values:
                return False
            if requirement.operator == "NotIn" and present and value in requirement.values:
                return False
            if requirement.operator == "Exists" and not present:
                return False
            if requirement.operator == "DoesNotExist" and present:
                return False
        return True


class ClusterLLMBudgetSpec(BudgetSpec):
    """A USD limit per period shared by every namespace its namespaceSelector picks.

    Every paid call of a sidecar in a selected namespace that the budget's filters
    cover reserves in this budget and in the namespace's own LLMBudgets at once, or
    in none; the limit holds for all those namespaces together."""

    model_config = ConfigDict(json_schema_extra=extra(drop=CLUSTER_DROPPED))

    scope: BudgetScope = BudgetScope.CLUSTER
    namespace_selector: NamespaceSelector | None = Field(
        default=None,
        description="Namespaces whose sidecars spend this budget, by Namespace labels; "
        "absent or empty: every namespace.",
    )

    def selects(self, labels: Mapping[str, str]) -> bool:
        return self.namespace_selector is None or self.namespace_selector.matches(labels)

    def budget(self) -> BudgetSpec:
        """The part the sidecar config carries (scope Cluster, no namespace)."""
        data = self.model_dump(include=set(BudgetSpec.model_fields), by_alias=True)
        return BudgetSpec.model_validate(data)
