"""A budget's status tells its own namespace's spend only: another team's spend on the
same provider is neither shown in it nor makes it fire Exceeded (real operator, real
PostgreSQL ledger, real API server)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.controlplane.kube import Kube
from tests.controlplane.postgres import PostgresServer
from tests.operator.harness import OperatorProcess, condition, get, poll
from tests.operator.lifecycle import migrated_ledger, operator_process
from tests.security import surface

pytestmark = [pytest.mark.kube, pytest.mark.postgres]


@pytest.fixture(scope="module")
def ledger(postgres: PostgresServer) -> Iterator[str]:
    yield from migrated_ledger(postgres)


@pytest.fixture(scope="module")
def operator(
    kube: Kube, crds: None, ledger: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    yield from operator_process(kube, tmp_path_factory.mktemp("operator"), ledger)


def budget(name: str, limit: int) -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {"name": name},
        "spec": {"provider": surface.PROVIDER, "limitUSD": limit},
    }


def status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return dict((get(kube, "llmbudget", name, namespace) or {}).get("status") or {})


def zero_spent(kube: Kube, namespace: str, name: str) -> Callable[[], bool]:
    return lambda: status(kube, namespace, name).get("spentUSD") == "0.00"


def test_status_counts_the_budgets_own_scope_only(
    kube: Kube, operator: OperatorProcess, ledger: str
) -> None:
    team_a, team_b = kube.create_namespace("team-a"), kube.create_namespace("team-b")
    kube.apply(budget("chat-a", 5), team_a)
    kube.apply(budget("chat-b", 50), team_b)
    for ns, name in ((team_a, "chat-a"), (team_b, "chat-b")):
        poll(zero_spent(kube, ns, name), timeout=30, what=f"{ns}/{name} synced")
    surface.spend(ledger, team_b, "chat-b", "7")  # team B's own spend, same provider
    poll(lambda: status(kube, team_b, "chat-b").get("spentUSD") == "7.00", what="B's 7 USD")
    labels = {"budget": "chat-a", "namespace": team_a, "provider": surface.PROVIDER}

    def synced() -> float:
        return operator.metric("aegis_budget_last_sync_timestamp_seconds", **labels) or 0.0

    since = synced()
    poll(lambda: synced() > since + 2 * operator.budget_interval, what="A read the ledger again")
    mine = status(kube, team_a, "chat-a")
    assert mine["spentUSD"] == "0.00", f"team B's spend shows in team A's budget: {mine}"
    assert operator.metric("aegis_budget_spent_usd", **labels) == 0.0
    exceeded = condition({"status": mine}, "Exceeded")
    assert exceeded is not None and exceeded["status"] == "False", exceeded
