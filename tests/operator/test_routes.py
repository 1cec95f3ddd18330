"""LLMRoute → ConfigMap, end to end: the operator process, the API server, the sidecar."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
import yaml

from aegis.operator.api.naming import (
    CONFIG_HASH_ANNOTATION,
    CONFIG_KEY,
    KOPF_PREFIX,
    key_env_var,
)
from aegis.sidecar.contract import content_hash
from aegis.sidecar.fakes import FakeUpstream
from aegis.sidecar.http.server import serve
from aegis.sidecar.runtime.watcher import load_config
from tests.controlplane.kube import Kube
from tests.operator.harness import (
    EXAMPLES,
    OperatorProcess,
    condition,
    events,
    get,
    poll,
    secret,
    wait_condition,
)

pytestmark = pytest.mark.kube
T = TypeVar("T")
KEYS = {"openai": "sk-test-openai-7f3a", "dashscope": "sk-test-dashscope-91c2"}


async def apoll(check: Callable[[], T | None], *, what: str, limit: float = 20.0) -> T:
    """:func:`poll` off the event loop (the fakes and the sidecar run on it)."""
    return await asyncio.to_thread(poll, check, timeout=limit, what=what)


def origin_route(urls: dict[str, str] | None = None, name: str = "rag-api") -> dict[str, Any]:
    route: dict[str, Any] = yaml.safe_load((EXAMPLES / "rag-api-route.yaml").read_text())
    route["metadata"]["name"] = name
    for provider in route["spec"]["providers"]:
        if urls:
            provider["baseURL"] = urls[provider["name"]]
        provider["maxRetries"] = 0
    return route


def ready_route(kube: Kube, ns: str, name: str = "rag-api") -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        route = get(kube, "llmroute", name, ns)
        ready = condition(route, "Ready")
        generation = (route or {}).get("metadata", {}).get("generation")
        current = route and route.get("status", {}).get("observedGeneration") == generation
        return route if ready and ready["status"] == "True" and current else None

    return check


def handled_route(
    kube: Kube, ns: str, name: str = "rag-api"
) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        route = get(kube, "llmroute", name, ns)
        annotations = (route or {}).get("metadata", {}).get("annotations") or {}
        return route if f"{KOPF_PREFIX}/last-handled-configuration" in annotations else None

    return check


def configmap(kube: Kube, ns: str, name: str = "rag-api") -> dict[str, Any] | None:
    return get(kube, "configmap", f"aegis-route-{name}", ns)


def reconciles(operator: OperatorProcess, outcome: str) -> float:
    return operator.metric("aegis_operator_reconciles_total", kind="LLMRoute", outcome=outcome) or 0


async def ask(client: openai.AsyncOpenAI, headers: dict[str, str]) -> dict[str, str]:
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello"}], extra_headers=headers
    )
    return {k.lower(): v for k, v in raw.headers.items() if k.lower().startswith("x-aegis")}


async def test_route_configmap_drives_a_sidecar_and_follows_edits_and_deletion(
    kube: Kube, ns: str, operator: OperatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        FakeUpstream.start("openai", api_key=KEYS["openai"]) as fake_openai,
        FakeUpstream.start("dashscope", api_key=KEYS["dashscope"]) as fake_dashscope,
        FakeUpstream.start("ollama") as fake_ollama,
    ):
        urls = {
            "local": fake_ollama.base_url,
            "dashscope": fake_dashscope.base_url,
            "openai": fake_openai.base_url,
        }
        for provider, key in KEYS.items():
            await asyncio.to_thread(kube.apply, secret(provider, apiKey=key), ns)
        await asyncio.to_thread(kube.apply, origin_route(urls), ns)
        route = await apoll(ready_route(kube, ns), what="route Ready")
        cm = configmap(kube, ns)
        assert cm is not None
        text = cm["data"][CONFIG_KEY]
        digest = route["status"]["configHash"]
        assert digest == content_hash(text.encode())
        assert cm["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == digest
        owner = cm["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "LLMRoute", "rag-api", route["metadata"]["uid"], True,
        )  # fmt: skip
        assert KEYS["openai"] not in text and KEYS["dashscope"] not in text
        assert [e["message"] for e in events(kube, ns, "rag-api", "ConfigRendered")]

        # The sidecar loads exactly this content (a mounted ConfigMap directory) and
        # routes as the route says; keys arrive as env vars named by the operator.
        mounted = tmp_path / "config"
        mounted.mkdir()
        (mounted / CONFIG_KEY).write_text(text)
        for provider, key in KEYS.items():
            monkeypatch.setenv(key_env_var(provider), key)
        monkeypatch.setenv("AEGIS_LEDGER_DSN", f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
        loaded = load_config(mounted)
        assert loaded.hash == digest
        async with serve(loaded, port=0, metrics_port=0, shutdown_timeout=1.0) as sidecar:
            client = openai.AsyncOpenAI(base_url=sidecar.base_url, api_key="unused", max_retries=0)
            critical = await ask(client, {"X-Aegis-Quality": "critical",
                                          "X-Aegis-Complexity": "high"})  # fmt: skip
            assert (critical["x-aegis-provider"], critical["x-aegis-model"]) == ("openai", "gpt-4o")
            assert critical["x-aegis-rule"] == "critical"
            batch = await ask(client, {"X-Aegis-Batch-Size": "12", "X-Aegis-Data-Class": "public"})
            assert (batch["x-aegis-provider"], batch["x-aegis-rule"]) == ("dashscope", "batch")
            sensitive = await ask(client, {"X-Aegis-Data-Class": "hipaa",
                                           "X-Aegis-Quality": "critical",
                                           "X-Aegis-Complexity": "high"})  # fmt: skip
            assert (sensitive["x-aegis-provider"], sensitive["x-aegis-rule"]) == (
                "local", "sensitive"
            )  # fmt: skip
            plain = await ask(client, {})
            assert (plain["x-aegis-provider"], plain["x-aegis-model"]) == ("local", "gemma3:4b")
        assert fake_openai.requests[-1]["model"] == "gpt-4o"

    # Editing the route changes the ConfigMap and its hash.
    patch = {"spec": {"default": {"provider": "local", "model": "gemma3:12b"}}}
    kube.kubectl("patch", "llmroute", "rag-api", "-n", ns, "--type=merge", "-p", json.dumps(patch))

    def rerendered() -> dict[str, Any] | None:
        route = ready_route(kube, ns)()
        return route if route and route["status"]["configHash"] != digest else None

    edited = await apoll(rerendered, what="new config hash")
    cm = configmap(kube, ns)
    assert cm is not None
    assert "model: gemma3:12b" in cm["data"][CONFIG_KEY]
    assert cm["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == edited["status"]["configHash"]
    updated = events(kube, ns, "rag-api", "ConfigUpdated")
    assert any(f"-> {edited['status']['configHash']}" in e["message"] for e in updated)

    # Deleting the route removes the ConfigMap (finalizer: no garbage collector here).
    kube.kubectl("delete", "llmroute", "rag-api", "-n", ns, "--wait=false")
    await apoll(
        lambda: configmap(kube, ns) is None and get(kube, "llmroute", "rag-api", ns) is None,
        what="ConfigMap and route gone",
    )


def test_secret_problems_are_reported_and_heal(
    kube: Kube, ns: str, operator: OperatorProcess
) -> None:
    kube.apply(secret("dashscope", apiKey="k"), ns)
    kube.apply(origin_route(), ns)

    missing = wait_condition(kube, "llmroute", "rag-api", ns, reason="SecretNotFound")
    assert missing["status"] == "False"
    where = "spec.providers[2].apiKeySecretRef (provider openai)"
    assert f"Secret 'openai' referenced by {where}" in missing["message"]
    assert f"does not exist in namespace {ns}" in missing["message"]
    # the config is still rendered: it is valid, only pods cannot start yet
    assert configmap(kube, ns) is not None
    assert events(kube, ns, "rag-api", "SecretNotFound")

    kube.apply(secret("openai", token="k"), ns)  # the resync timer notices the change
    wrong_key = wait_condition(kube, "llmroute", "rag-api", ns, reason="KeyNotFound")
    assert "Secret 'openai' has no key 'apiKey'" in wrong_key["message"]
    assert wrong_key["lastTransitionTime"] == missing["lastTransitionTime"]  # still False

    kube.apply(secret("openai", apiKey="k"), ns)
    poll(ready_route(kube, ns), what="Ready after the key was added")
    assert events(kube, ns, "rag-api", "Ready")


def test_reconcile_is_idempotent(kube: Kube, ns: str, operator: OperatorProcess) -> None:
    for provider in KEYS:
        kube.apply(secret(provider, apiKey="k"), ns)
    kube.apply(origin_route(), ns)
    poll(ready_route(kube, ns), what="route Ready")
    # Ready is written by the handler; kopf then records what it handled (an
    # annotation, one more write). The baseline is the route once that is there.
    route = poll(handled_route(kube, ns), what="kopf's last-handled annotation")
    cm = configmap(kube, ns)
    assert cm is not None
    before = reconciles(operator, "unchanged")
    # Two resync passes (every 3 s here) over every route this operator serves (the
    # counter is theirs together) find nothing to do and write nothing.
    passes = 2 * len(kube.kubectl_json("get", "llmroutes", "--all-namespaces")["items"])
    poll(lambda: reconciles(operator, "unchanged") >= before + passes, timeout=90, what="resyncs")
    again = get(kube, "llmroute", "rag-api", ns)
    cm_again = configmap(kube, ns)
    assert again is not None and cm_again is not None
    assert again["metadata"]["resourceVersion"] == route["metadata"]["resourceVersion"]
    assert cm_again["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]
    assert len(events(kube, ns, "rag-api", "ConfigRendered")) == 1


def test_foreign_configmap_is_not_overwritten(
    kube: Kube, ns: str, operator: OperatorProcess
) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "aegis-route-rag-api"},
        "data": {"config.yaml": "mine"},
    }
    kube.apply(foreign, ns)
    kube.apply(origin_route(), ns)
    conflict = wait_condition(kube, "llmroute", "rag-api", ns, reason="ConfigMapConflict")
    assert "is not managed by Aegis" in conflict["message"]
    cm = configmap(kube, ns)
    assert cm is not None and cm["data"] == {"config.yaml": "mine"}


def test_budgets_reach_the_config_and_leave_it(
    kube: Kube, ns: str, operator: OperatorProcess
) -> None:
    for provider in KEYS:
        kube.apply(secret(provider, apiKey="k"), ns)
    kube.apply(origin_route(), ns)
    poll(ready_route(kube, ns), what="route Ready")

    def budgets_in_config() -> list[str]:
        cm = configmap(kube, ns)
        document = yaml.safe_load(cm["data"][CONFIG_KEY]) if cm else {}
        return sorted(b["name"] for b in document.get("budgets", []))

    kube.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "budgets.yaml"))
    poll(lambda: budgets_in_config() == ["dashscope-monthly", "openai-monthly"], what="budgets")
    route = get(kube, "llmroute", "rag-api", ns)
    assert route is not None
    assert route["status"]["budgets"] == f"{ns}/dashscope-monthly,{ns}/openai-monthly"

    # A budget of the same provider in another time zone and period is one more budget:
    # each is charged in its own period key, so both reach the config.
    berlin = {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {"name": "openai-berlin"},
        "spec": {
            "provider": "openai", "limitUSD": 10, "timezone": "Europe/Berlin", "period": "Daily",
        },
    }  # fmt: skip
    kube.apply(berlin, ns)
    both = ["dashscope-monthly", "openai-berlin", "openai-monthly"]
    poll(lambda: budgets_in_config() == both, what="a budget in another zone joins")
    kube.kubectl("delete", "llmbudget", "openai-berlin", "-n", ns)
    poll(ready_route(kube, ns), what="Ready again")

    kube.kubectl("delete", "llmbudget", "openai-monthly", "-n", ns)
    poll(lambda: budgets_in_config() == ["dashscope-monthly"], what="budget removed")
