"""ClusterLLMBudget on the real API server with the operator: namespaces chosen by
labels and followed when labels change, the routes' ConfigMaps, the ledger's
spenders and the status from the ledger."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from aegis.sidecar.contract import BudgetKey, BudgetScope
from aegis.sidecar.ledger.db import create_engine
from tests.controlplane.kube import Kube
from tests.operator.harness import (
    OperatorProcess,
    condition,
    delete_aegis_objects,
    events,
    poll,
)
from tests.operator.ledger import charge, row

pytestmark = pytest.mark.kube


def route() -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "chat"},
        "spec": {
            "providers": [
                {"name": "local", "type": "ollama", "models": {"default": "gemma3:4b"}},
                {"name": "openai", "type": "openai", "models": {"default": "gpt-4o-mini"}},
            ],
            "default": {"provider": "local"},
        },
    }


def cluster_budget(name: str, label: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "ClusterLLMBudget",
        "metadata": {"name": name},
        "spec": {
            "provider": "openai",
            "limitUSD": 500,
            "period": "Weekly",
            "timezone": "Europe/Berlin",
            "namespaceSelector": {"matchLabels": {label: "paid"}},
            **spec,
        },
    }


def get_cluster(kube: Kube, name: str) -> dict[str, Any]:
    done = kube.kubectl("get", "clusterllmbudget", name, "-o", "json", check=False)
    return {} if done.returncode else dict(yaml.safe_load(done.stdout))


def rendered_budgets(kube: Kube, namespace: str) -> list[tuple[str, str]]:
    """(scope, name) of the budgets in the route's rendered config."""
    done = kube.kubectl("get", "configmap", "aegis-route-chat", "-n", namespace, "-o", "json",
                        check=False)  # fmt: skip
    if done.returncode:
        return []
    config = yaml.safe_load(yaml.safe_load(done.stdout)["data"]["config.yaml"])
    return sorted((b["scope"], b["name"]) for b in config.get("budgets") or [])


def ledger_spenders(dsn: str, name: str) -> list[str]:
    async def read() -> list[str]:
        engine = create_engine(dsn)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(
                    text(
                        "SELECT namespace FROM aegis.budget_spenders WHERE budget_scope = "
                        "'Cluster' AND budget_namespace = '' AND budget_name = :name"
                    ),
                    {"name": name},
                )
                return sorted(str(r[0]) for r in result)
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.fixture
def three(kube: Kube, operator: OperatorProcess) -> Iterator[list[str]]:
    names = [kube.create_namespace() for _ in range(3)]
    yield names
    for ns in names:
        delete_aegis_objects(kube, ns)
        kube.delete_namespace(ns)


def test_cluster_budget_follows_namespace_labels(
    kube: Kube, operator: OperatorProcess, operator_ledger: str, three: list[str]
) -> None:
    a, b, c = three
    label = f"tier-{uuid.uuid4().hex[:6]}.aegis.test/plan"
    for ns in (a, b):
        kube.kubectl("label", "namespace", ns, f"{label}=paid")
    for ns in three:
        kube.apply(route(), ns)
    name = f"org-{uuid.uuid4().hex[:8]}"
    kube.apply(cluster_budget(name, label))
    try:
        cluster = ("Cluster", name)

        def status_has(**wanted: Any) -> dict[str, Any] | None:
            status = get_cluster(kube, name).get("status") or {}
            return status if all(status.get(k) == v for k, v in wanted.items()) else None

        status = poll(
            lambda: status_has(namespaces=",".join(sorted((a, b))), namespaceCount=2),
            timeout=30, what="the cluster budget's namespaces",
        )  # fmt: skip
        poll(lambda: cluster in rendered_budgets(kube, a) and cluster in rendered_budgets(kube, b),
             timeout=30, what="routes of the selected namespaces render it")  # fmt: skip
        assert rendered_budgets(kube, c) == []
        assert ledger_spenders(operator_ledger, name) == sorted((a, b))
        status = poll(lambda: status_has(limitUSD="500.00"), timeout=30, what="ledger read")
        assert status["period"].split("-W")[0].isdigit() and "-W" in status["period"]
        assert status["routes"] == ",".join(sorted(f"{ns}/chat" for ns in (a, b)))
        ready = condition({"status": status}, "Ready")
        assert ready is not None and ready["reason"] == "Synced"

        # kubectl shows the period, the money and when it resets
        lines = kube.kubectl("get", "clusterllmbudget", name).stdout.splitlines()
        assert lines[0].split() == [
            "NAME", "PERIOD", "LIMIT", "SPENT", "REMAINING", "RESETS", "READY", "AGE",
        ]  # fmt: skip
        assert lines[1].split()[1:7] == [
            status["period"], "500.00", "0.00", "500.00", status["periodEnd"], "True",
        ]  # fmt: skip
        wide = kube.kubectl("get", "clusterllmbudget", name, "-o", "wide").stdout
        assert "NAMESPACES" in wide.splitlines()[0] and " 2 " in wide.splitlines()[1]

        # a selected namespace's sidecars spend it; the status sums their rows
        key = BudgetKey(BudgetScope.CLUSTER, "", name)
        week = status["period"]
        charge(operator_ledger, name, [row("openai", "120", namespace=a)], key, week)
        charge(operator_ledger, name, [row("openai", "30.5", namespace=b)], key, week)
        status = poll(lambda: status_has(spentUSD="150.50"), timeout=30, what="spend read")
        assert (status["remainingUSD"], status["utilisation"]) == ("349.50", "30.1%")

        # the labels move: c joins, b leaves; spenders, status and ConfigMaps follow
        kube.kubectl("label", "namespace", c, f"{label}=paid")
        kube.kubectl("label", "namespace", b, f"{label}-")
        poll(lambda: status_has(namespaces=",".join(sorted((a, c))), namespaceCount=2),
             timeout=30, what="namespaces after relabelling")  # fmt: skip
        poll(lambda: cluster in rendered_budgets(kube, c) and rendered_budgets(kube, b) == [],
             timeout=30, what="ConfigMaps after relabelling")  # fmt: skip
        assert cluster in rendered_budgets(kube, a)
        assert ledger_spenders(operator_ledger, name) == sorted((a, c))
        # b's money stays spent (it was spent), but b can spend no more of it
        with pytest.raises(Exception, match=r"not|denied|permission"):
            charge(operator_ledger, name, [row("openai", "1", namespace=b)], key, week)
        assert status_has(spentUSD="150.50") is not None

        # a new namespace with the label joins at once
        d = kube.create_namespace()
        try:
            kube.kubectl("label", "namespace", d, f"{label}=paid")
            poll(lambda: status_has(namespaceCount=3), timeout=30, what="a new namespace")
            assert ledger_spenders(operator_ledger, name) == sorted((a, c, d))
        finally:
            kube.delete_namespace(d)
    finally:
        kube.kubectl("delete", "clusterllmbudget", name, "--ignore-not-found")
    poll(lambda: rendered_budgets(kube, a) == [] and rendered_budgets(kube, c) == [],
         timeout=30, what="routes re-rendered without the deleted budget")  # fmt: skip
    assert ledger_spenders(operator_ledger, name) == []  # no one may spend it any more


def test_notify_budget_over_its_limit_says_so(
    kube: Kube, operator: OperatorProcess, operator_ledger: str, three: list[str]
) -> None:
    a = three[0]
    label = f"n-{uuid.uuid4().hex[:6]}.aegis.test/plan"
    kube.kubectl("label", "namespace", a, f"{label}=paid")
    name = f"notify-{uuid.uuid4().hex[:8]}"
    kube.apply(cluster_budget(name, label, limitUSD=10, onExceeded="Notify",
                              alertThresholds=[50]))  # fmt: skip
    try:
        key = BudgetKey(BudgetScope.CLUSTER, "", name)
        synced = poll(lambda: (get_cluster(kube, name).get("status") or {}).get("period"),
                      timeout=30, what="synced")  # fmt: skip
        charge(operator_ledger, name, [row("openai", "10", namespace=a)], key, synced)

        def exceeded() -> dict[str, Any] | None:
            found = condition(get_cluster(kube, name), "Exceeded")
            return found if found and found["status"] == "True" else None

        found = poll(exceeded, timeout=30, what="Exceeded=True")
        assert "Notify" in found["message"]
        wide = kube.kubectl("get", "clusterllmbudget", name, "-o", "wide").stdout.splitlines()
        assert "EXCEEDED" in wide[0] and "True" in wide[1].split()
        # cluster objects' events go to the operator's own namespace (kopf's default)
        posted = poll(
            lambda: [e for e in events(kube, "default", name, "BudgetExceeded")],
            timeout=30, what="the BudgetExceeded event",
        )  # fmt: skip
        assert posted[0]["type"] == "Warning" and "go ahead" in posted[0]["message"]
    finally:
        kube.kubectl("delete", "clusterllmbudget", name, "--ignore-not-found")
