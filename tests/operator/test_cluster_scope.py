"""ClusterLLMBudget without a cluster: selectors, spenders, the budgets a route renders,
and the status plan shared with LLMBudget (periods, reset time, Notify)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from aegis.operator.api.cluster import ClusterLLMBudgetSpec, NamespaceSelector
from aegis.operator.controllers.budget_plan import (
    Spend,
    applied_budget,
    ledger_provider,
    plan_spend,
)
from aegis.operator.controllers.cluster_scope import (
    BudgetView,
    ClusterBudgetRef,
    cluster_budgets_of,
    cluster_ref,
    selected,
    spenders,
)
from aegis.operator.controllers.indices import budgets_for
from aegis.operator.controllers.render import parse_route_spec, render_route
from aegis.sidecar.contract import BudgetKey, BudgetScope

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # a Saturday
NAMESPACES = {
    "team-a": [{"tier": "paid", "kubernetes.io/metadata.name": "team-a"}],
    "team-b": [{"tier": "paid", "env": "prod", "kubernetes.io/metadata.name": "team-b"}],
    "team-c": [{"tier": "free", "kubernetes.io/metadata.name": "team-c"}],
}


def cluster(name: str = "org-openai", **spec: Any) -> ClusterBudgetRef:
    ref = cluster_ref(name, {"provider": "openai", "limitUSD": 500, **spec})
    assert ref is not None
    return ref


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"matchLabels": {"tier": "paid"}}, ["team-a", "team-b"]),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["free"]}]},
         ["team-c"]),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]},
         ["team-a", "team-c"]),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, ["team-b"]),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]},
         ["team-a", "team-c"]),
        ({"matchLabels": {"tier": "paid"},
          "matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, ["team-a"]),
        ({}, ["team-a", "team-b", "team-c"]),
        (None, ["team-a", "team-b", "team-c"]),
    ],
)  # fmt: skip
def test_selector_semantics_are_kubernetes(selector: Any, expected: list[str]) -> None:
    spec = cluster(namespaceSelector=selector).spec
    assert selected(spec, NAMESPACES) == expected
    # without a selector the ledger lets every namespace spend, also one not seen yet
    assert spenders(spec, NAMESPACES) == (["*"] if not selector else expected)


def test_the_spec_is_the_sidecar_budget_keyed_cluster_wide() -> None:
    ref = cluster(period="Weekly", timezone="Asia/Kolkata", models=["gpt-4o*"])
    budget = ref.spec.budget()
    assert budget.scope is BudgetScope.CLUSTER and budget.namespace is None
    assert budget.key("team-a") == BudgetKey(BudgetScope.CLUSTER, "", "org-openai")
    assert (budget.period, budget.timezone) == ("Weekly", "Asia/Kolkata")
    assert budget.models == ["gpt-4o*"]
    with pytest.raises(ValidationError):  # a namespaced filter only
        ClusterLLMBudgetSpec.model_validate(
            {"name": "x", "limitUSD": 1, "serviceAccounts": ["default"]}
        )
    assert cluster_ref("x", {"limitUSD": -1}) is None
    assert NamespaceSelector().matches({}) is True


def test_a_route_renders_its_namespace_budgets_and_the_cluster_budgets_that_select_it() -> None:
    route = parse_route_spec(
        {
            "providers": [
                {"name": "local", "type": "ollama", "models": {"default": "gemma3:4b"}},
                {"name": "openai", "type": "openai", "models": {"default": "gpt-4o-mini"}},
            ],
            "default": {"provider": "local"},
        }
    )
    own = applied_budget("team-a", "org-openai", {"provider": "openai", "limitUSD": 50}, None)
    assert own is not None
    clusters = {"*": [cluster(namespaceSelector={"matchLabels": {"tier": "paid"}})]}
    view = BudgetView({"team-a": [own]}, clusters, NAMESPACES)
    rendered = render_route("team-a", "chat", route, budgets_for(view, "team-a"))
    keys = sorted(str(b.key("team-a")) for b in rendered.config.budgets)
    # a namesake of the cluster budget is another budget: both reserve
    assert keys == ["Cluster//org-openai", "Namespace/team-a/org-openai"]
    assert [b.key for b in rendered.budgets] == ["org-openai", "team-a/org-openai"]
    free = render_route("team-c", "chat", route, budgets_for(view, "team-c"))
    assert free.config.budgets == []
    assert cluster_budgets_of(clusters, NAMESPACES, "team-b") == {"org-openai"}
    assert cluster_budgets_of(clusters, NAMESPACES, "gone") == frozenset()
    # a label change is all it takes
    relabelled = {**NAMESPACES, "team-c": [{"tier": "paid"}]}
    again = BudgetView({}, clusters, relabelled)
    assert [b.name for b in budgets_for(again, "team-c")] == ["org-openai"]


def test_status_has_the_period_its_reset_and_notify_says_exceeded_once() -> None:
    spec = cluster(period="Weekly", timezone="Europe/Berlin", onExceeded="Notify",
                   alertThresholds=[50]).spec.budget()  # fmt: skip
    body: dict[str, Any] = {
        "metadata": {"name": "org-openai", "generation": 2, "resourceVersion": "7"},
        "spec": {},
    }
    over = Spend(spent=Decimal("510"), reserved=Decimal("0"))
    plan = plan_spend(body, spec, "2026-W49", over, {"namespaceCount": 2}, heartbeat=60, now=NOW)
    assert plan.status is not None
    status = plan.status["status"]
    assert status["period"] == "2026-W49" and status["namespaceCount"] == 2
    assert status["periodStart"] == "2026-11-29T23:00:00Z"  # Monday 00:00 in Berlin
    assert status["periodEnd"] == "2026-12-06T23:00:00Z"
    assert (status["spentUSD"], status["remainingUSD"], status["utilisation"]) == (
        "510.00", "0.00", "102.0%",
    )  # fmt: skip
    assert status["thresholdsCrossed"] == [50, 100]
    exceeded = next(c for c in status["conditions"] if c["type"] == "Exceeded")
    assert exceeded["status"] == "True" and "Notify" in exceeded["message"]
    assert [e.reason for e in plan.events] == ["BudgetThresholdCrossed", "BudgetExceeded"]
    assert plan.gauges is not None and plan.gauges[0] == "openai"
    assert ledger_provider(cluster(provider=None).spec.budget()) == "any"


def test_the_documented_cluster_budget_is_valid() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    block = page.split("kind: ClusterLLMBudget", 1)[1].split("```", 1)[0]
    doc = yaml.safe_load("kind: ClusterLLMBudget" + block)
    ref = cluster_ref(doc["metadata"]["name"], doc["spec"])
    assert ref is not None and ref.spec.namespace_selector is not None
    assert ref.spec.selects({"billing.example.com/plan": "paid"})
    assert not ref.spec.selects({"billing.example.com/plan": "free"})
