"""Changes made while the operator is down are reconciled when it comes back."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.controlplane.kube import Kube
from tests.operator.harness import (
    EXAMPLES,
    OperatorProcess,
    condition,
    get,
    poll,
    secret,
    status_field,
)

pytestmark = pytest.mark.kube


def route(name: str, model: str = "gemma3:4b") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / "rag-api-route.yaml").read_text())
    document["metadata"]["name"] = name
    document["spec"]["providers"][0]["models"]["default"] = model
    return document


def config(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    cm = get(kube, "configmap", f"aegis-route-{name}", ns)
    loaded: dict[str, Any] | None = yaml.safe_load(cm["data"]["config.yaml"]) if cm else None
    return loaded


def converged(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    obj = get(kube, "llmroute", name, ns)
    ready = condition(obj, "Ready")
    current = (
        obj and obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
    )
    return obj if ready and ready["status"] == "True" and current else None


def test_operator_restart_loses_no_change(kube: Kube, ns: str, operator: OperatorProcess) -> None:
    for provider in ("openai", "dashscope"):
        kube.apply(secret(provider, apiKey="k"), ns)
    for name in ("edited", "deleted"):
        kube.apply(route(name), ns)
        poll(lambda n=name: converged(kube, ns, n), what=f"{name} Ready")  # type: ignore[misc]

    operator.kill()  # SIGKILL: nothing is flushed, nothing said goodbye
    kube.apply(route("edited", model="gemma3:12b"), ns)
    kube.apply(route("created"), ns)
    kube.kubectl("delete", "llmroute", "deleted", "-n", ns, "--wait=false")
    kube.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "budgets.yaml"))
    # without the operator, the deleted route waits on its finalizer
    pending = get(kube, "llmroute", "deleted", ns)
    assert pending is not None and pending["metadata"].get("deletionTimestamp")

    operator.start()
    edited = poll(lambda: converged(kube, ns, "edited"), timeout=30, what="edited converged")
    document = config(kube, ns, "edited")
    assert document is not None
    assert document["providers"][0]["models"]["default"] == "gemma3:12b"
    assert sorted(b["name"] for b in document["budgets"]) == ["dashscope-monthly", "openai-monthly"]
    assert edited["status"]["budgets"] == f"{ns}/dashscope-monthly,{ns}/openai-monthly"
    poll(lambda: converged(kube, ns, "created"), timeout=30, what="created converged")
    created = config(kube, ns, "created")
    assert created is not None and len(created["budgets"]) == 2
    poll(
        lambda: (
            get(kube, "llmroute", "deleted", ns) is None
            and get(kube, "configmap", "aegis-route-deleted", ns) is None
        ),
        timeout=30,
        what="deleted route and its ConfigMap gone",
    )
    routes = f"{ns}/created,{ns}/edited"
    poll(
        lambda: status_field(kube, "llmbudget", "openai-monthly", ns, "routes") == routes,
        what="budget status after restart",
    )


def test_graceful_stop_and_start(kube: Kube, ns: str, operator: OperatorProcess) -> None:
    kube.apply(route("calm"), ns)
    poll(lambda: get(kube, "configmap", "aegis-route-calm", ns), what="ConfigMap")
    assert operator.stop() == 0, operator.log_tail()  # SIGTERM: a clean exit
    log = operator.log_tail(200)
    assert "operator stopped" in log
    for line in log.splitlines():
        if line.startswith("{"):
            json.loads(line)  # JSON lines
    kube.kubectl("patch", "llmroute", "calm", "-n", ns, "--type=merge",
                 "-p", json.dumps({"spec": {"fallback": ["local"]}}))  # fmt: skip
    operator.start()
    poll(
        lambda: (c := config(kube, ns, "calm")) and c["fallback"] == ["local"],
        timeout=30,
        what="change made while stopped",
    )
