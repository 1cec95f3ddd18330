"""The CRDs on the real API server: examples, kubectl output, and what is refused."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.controlplane.kube import Kube
from tests.operator.harness import EXAMPLES, OperatorProcess, condition, get, poll
from tests.operator.ledger import charge, row

pytestmark = pytest.mark.kube


def test_examples_apply_and_kubectl_shows_real_values(
    kube: Kube, ns: str, operator: OperatorProcess, operator_ledger: str
) -> None:
    applied = kube.kubectl("apply", "-n", ns, "-f", str(EXAMPLES))
    for name in ("llmroute.aegis.io/rag-api", "llmroute.aegis.io/chat-api"):
        assert f"{name} created" in applied.stdout
    for name in ("llmbudget.aegis.io/dashscope-monthly", "llmbudget.aegis.io/openai-monthly"):
        assert f"{name} created" in applied.stdout

    def synced() -> bool:
        budget = get(kube, "llmbudget", "dashscope-monthly", ns) or {}
        return (condition(budget, "Ready") or {}).get("reason") == "Synced"

    poll(synced, timeout=30, what="the budget's limit in the ledger")
    spend = [row("dashscope", "30.25", namespace=ns), row("dashscope", "66.00", namespace=ns)]
    charge(operator_ledger, "dashscope-monthly", spend)

    def ready() -> bool:
        routes = [get(kube, "llmroute", n, ns) for n in ("rag-api", "chat-api")]
        budget = get(kube, "llmbudget", "dashscope-monthly", ns)
        return all((condition(r, "Ready") or {}).get("status") == "True" for r in routes) and (
            (budget or {}).get("status", {}).get("spentUSD") == "96.25"
        )

    poll(ready, timeout=30, what="examples reconciled")
    routes = kube.kubectl("get", "llmroutes", "-n", ns).stdout.splitlines()
    assert routes[0].split() == ["NAME", "READY", "PROVIDERS", "ROLLOUT", "WEIGHT", "AGE"]
    by_name = {line.split()[0]: line.split() for line in routes[1:]}
    assert by_name["rag-api"][1:3] == ["True", "local,dashscope,openai"]
    assert by_name["chat-api"][1:5] == ["True", "local,dashscope,openai", "Progressing", "10"]
    budgets = kube.kubectl("get", "llmbudgets", "-n", ns).stdout.splitlines()
    header = ["NAME", "PERIOD", "LIMIT", "SPENT", "REMAINING", "RESETS", "READY", "AGE"]
    assert budgets[0].split() == header
    rows = {line.split()[0]: line.split() for line in budgets[1:]}
    status = (get(kube, "llmbudget", "dashscope-monthly", ns) or {})["status"]
    assert rows["dashscope-monthly"][1:7] == [
        status["period"], "120.00", "96.25", "23.75", status["periodEnd"], "True",
    ]  # fmt: skip
    assert len(status["period"]) == 7  # Monthly: 2026-12
    assert status["periodEnd"].endswith("-01T00:00:00Z")  # the next month's first midnight
    wide = kube.kubectl("get", "aegis", "-n", ns, "-o", "wide").stdout
    assert "ON-EXCEEDED" in wide and "FallbackLocal" in wide and "Reconciled" in wide
    assert "UTILISATION" in wide and "80.2%" in wide


def test_kubectl_explain_teaches_the_api(kube: Kube, crds: None) -> None:
    def explain(field: str) -> str:
        return " ".join(kube.kubectl("explain", field).stdout.split())  # unwrap lines

    rules = explain("llmroute.spec.rules")
    assert "the first whose match holds picks the target" in rules
    assert "match <Object> Conditions, all of which must hold" in rules
    assert "to <Object> -required- Where a matching request goes" in rules
    secret_ref = explain("llmroute.spec.providers.apiKeySecretRef")
    assert "The Secret key holding the API key" in secret_ref
    assert "key <string> -required- Key in the Secret's data" in secret_ref
    budget = explain("llmbudget.spec.alertThresholds")
    assert "one event each per period. Default: 80, 90, 100." in budget


def _route() -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "bad"},
        "spec": {
            "providers": [
                {"name": "local", "type": "ollama", "models": {"default": "gemma3:4b"}},
                {
                    "name": "openai",
                    "type": "openai",
                    "models": {"default": "gpt-4o-mini"},
                    "apiKeySecretRef": {"name": "openai", "key": "apiKey"},
                },
            ],
            "rules": [
                {
                    "name": "critical",
                    "match": {"quality": ["critical"]},
                    "to": {"provider": "openai"},
                }
            ],
            "default": {"provider": "local"},
            "fallback": ["local"],
            "rollout": {
                "candidate": {"default": {"provider": "openai"}},
                "steps": [10, 50, 100],
                "interval": "1h",
            },
        },
    }


def _budget() -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {"name": "bad"},
        "spec": {"provider": "openai", "limitUSD": 80},
    }


def _cluster() -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "ClusterLLMBudget",
        "metadata": {"name": "bad"},
        "spec": {
            "provider": "openai",
            "limitUSD": 500,
            "period": "Weekly",
            "timezone": "America/New_York",
            "namespaceSelector": {"matchLabels": {"tier": "paid"}},
        },
    }


Edit = Callable[[dict[str, Any]], Any]


def _spec(edit: Callable[[dict[str, Any]], Any]) -> Edit:
    return lambda obj: edit(obj["spec"])


# (id, base, edit, text the API server's message must contain)
INVALID: list[tuple[str, Callable[[], dict[str, Any]], Edit, str]] = [
    ("duplicate-provider", _route, _spec(lambda s: s["providers"].append(
        {"name": "local", "type": "ollama", "models": {"default": "x"}})),
     'spec.providers[2]: Duplicate value: {"name":"local"}'),
    ("duplicate-rule", _route, _spec(lambda s: s["rules"].append(copy.deepcopy(s["rules"][0]))),
     'spec.rules[1]: Duplicate value: {"name":"critical"}'),
    ("rule-unknown-provider", _route, _spec(lambda s: s["rules"][0]["to"].update(provider="x")),
     "spec.rules: Invalid value: \"object\": every rule's to.provider must name a provider"),
    ("default-unknown-provider", _route, _spec(lambda s: s["default"].update(provider="x")),
     "spec.default.provider: Invalid value: \"object\": default.provider must name a provider"),
    ("fallback-unknown-provider", _route, _spec(lambda s: s.update(fallback=["local", "x"])),
     "spec.fallback: Invalid value: \"object\": every fallback entry must name a provider"),
    ("fallback-duplicate", _route, _spec(lambda s: s.update(fallback=["local", "local"])),
     "spec.fallback: Invalid value: \"object\": fallback entries must be unique"),
    ("local-only-needs-local-provider", _route, _spec(lambda s: (
        s["providers"].pop(0), s["default"].update(provider="openai"), s.update(fallback=[]))),
     "spec.providers: Invalid value: \"object\": privacy.localOnly classes"),
    ("local-only-unknown-class", _route,
     _spec(lambda s: s.update(privacy={"classes": ["public", "internal", "pii"],
                                       "localOnly": ["hipaa"]})),
     "spec.privacy.localOnly: Invalid value: \"object\": every localOnly class must be one of"),
    ("default-class-unknown", _route,
     _spec(lambda s: s.update(privacy={"classes": ["public", "pii"], "localOnly": ["pii"]})),
     "spec.privacy.defaultClass: Invalid value: \"object\": defaultClass must be one of classes"),
    ("steps-not-ending-at-100", _route, _spec(lambda s: s["rollout"].update(steps=[10, 50])),
     "spec.rollout.steps: Invalid value: \"object\": steps must end at 100"),
    ("steps-not-ascending", _route, _spec(lambda s: s["rollout"].update(steps=[50, 10, 100])),
     "spec.rollout.steps: Invalid value: \"object\": steps must be strictly ascending"),
    ("step-out-of-range", _route, _spec(lambda s: s["rollout"].update(steps=[0, 100])),
     "spec.rollout.steps[0]: Invalid value: 0"),
    ("candidate-unknown-provider", _route,
     _spec(lambda s: s["rollout"]["candidate"].update(
         rules=[{"name": "r", "to": {"provider": "x"}}])),
     "spec.rollout.candidate.rules: Invalid value: \"object\": every candidate rule's"),
    ("abort-and-promote", _route, _spec(lambda s: s["rollout"].update(abort=True, promote=True)),
     "spec.rollout.promote: Invalid value: \"object\": abort and promote cannot both be set"),
    ("interval-format", _route, _spec(lambda s: s["rollout"].update(interval="2d")),
     "spec.rollout.interval: Invalid value: \"2d\""),
    ("interval-too-short", _route, _spec(lambda s: s["rollout"].update(interval="10ms")),
     "spec.rollout.interval: Invalid value: \"object\": interval must be between 1s and 2160h"),
    ("max-error-rate", _route,
     _spec(lambda s: s["rollout"].update(analysis={"maxErrorRate": 1.5})),
     "spec.rollout.analysis.maxErrorRate: Invalid value: 1.5"),
    ("batch-range", _route,
     _spec(lambda s: s["rules"][0]["match"].update(minBatchSize=20, maxBatchSize=10)),
     "spec.rules[0].match.minBatchSize: Invalid value: \"object\": minBatchSize must not exceed"),
    ("any-llm-needs-sdk-provider", _route,
     _spec(lambda s: s["providers"][1].update(type="any-llm")),
     "spec.providers[1].sdkProvider: Invalid value: \"object\": sdkProvider is required"),
    ("openai-compatible-needs-base-url", _route,
     _spec(lambda s: s["providers"][1].update(type="openai-compatible")),
     "spec.providers[1].baseURL: Invalid value: \"object\": baseURL is required"),
    ("provider-type-enum", _route, _spec(lambda s: s["providers"][1].update(type="claude")),
     "spec.providers[1].type: Unsupported value: \"claude\""),
    ("provider-name-pattern", _route, _spec(lambda s: s["providers"][1].update(name="Open_AI")),
     "spec.providers[1].name: Invalid value: \"Open_AI\""),
    ("base-url-scheme", _route, _spec(lambda s: s["providers"][0].update(baseURL="ftp://x")),
     "spec.providers[0].baseURL: Invalid value: \"ftp://x\""),
    ("too-many-providers", _route, _spec(lambda s: s.update(providers=[
        {"name": f"p{i}", "type": "ollama", "models": {"default": "m"}} for i in range(33)])),
     "spec.providers: Too many: 33: must have at most 32 items"),
    ("too-many-rules", _route, _spec(lambda s: s.update(rules=[
        {"name": f"r{i}", "to": {"provider": "local"}} for i in range(65)])),
     "spec.rules: Too many: 65: must have at most 64 items"),
    ("vision-duplicate", _route,
     _spec(lambda s: s["providers"][0]["models"].update(vision=["a", "a"])),
     "spec.providers[0].models.vision: Invalid value: \"object\": vision models must be unique"),
    ("secret-key-chars", _route,
     _spec(lambda s: s["providers"][1]["apiKeySecretRef"].update(key="api key")),
     "spec.providers[1].apiKeySecretRef.key: Invalid value: \"api key\""),
    ("selector-values", _route,
     _spec(lambda s: s.update(podSelector={"matchExpressions": [{"key": "app",
                                                                  "operator": "In"}]})),
     "spec.podSelector.matchExpressions[0].values: Invalid value: \"object\""),
    ("route-name-length", _route, lambda o: o["metadata"].update(name="r" * 64),
     "metadata.name of an LLMRoute must be at most 63 characters"),
    ("threshold-zero", _budget, _spec(lambda s: s.update(alertThresholds=[0, 90])),
     "spec.alertThresholds[0]: Invalid value: 0"),
    ("threshold-over-100", _budget, _spec(lambda s: s.update(alertThresholds=[80, 101])),
     "spec.alertThresholds[1]: Invalid value: 101"),
    ("threshold-duplicate", _budget, _spec(lambda s: s.update(alertThresholds=[80, 80])),
     "spec.alertThresholds[1]: Duplicate value: 80"),
    ("negative-limit", _budget, _spec(lambda s: s.update(limitUSD=-1)),
     "spec.limitUSD: Invalid value: -1"),
    ("on-exceeded-enum", _budget, _spec(lambda s: s.update(onExceeded="Ignore")),
     "spec.onExceeded: Unsupported value: \"Ignore\""),
    ("period-enum", _budget, _spec(lambda s: s.update(period="Yearly")),
     "spec.period: Unsupported value: \"Yearly\""),
    ("provider-and-providers", _budget, _spec(lambda s: s.update(providers=["anthropic"])),
     "spec.providers: Invalid value: \"object\": set provider or providers, not both"),
    ("providers-duplicate", _budget,
     _spec(lambda s: (s.pop("provider"), s.update(providers=["openai", "openai"]))),
     "spec.providers[1]: Duplicate value: \"openai\""),
    ("bad-time-zone", _budget, _spec(lambda s: s.update(timezone="Europe/Berln")),
     "spec.timezone: Invalid value: \"object\": timezone must be an IANA time zone name"),
    ("glob-unclosed-bracket", _budget, _spec(lambda s: s.update(models=["gpt-4[o"])),
     "spec.models: Invalid value: \"object\": every models glob must close each ["),
    ("glob-characters", _budget, _spec(lambda s: s.update(models=["gpt 4o"])),
     "spec.models[0]: Invalid value: \"gpt 4o\""),
    ("data-class-pattern", _budget, _spec(lambda s: s.update(dataClasses=["PII"])),
     "spec.dataClasses[0]: Invalid value: \"PII\""),
    ("service-account-pattern", _budget, _spec(lambda s: s.update(serviceAccounts=["Web_App"])),
     "spec.serviceAccounts[0]: Invalid value: \"Web_App\""),
    ("namespaces-star-alone", _budget, _spec(lambda s: s.update(namespaces=["*", "team"])),
     "spec.namespaces: Invalid value: \"object\": '*' must be the only entry"),
    ("budget-name-dns-label", _budget, lambda o: o["metadata"].update(name="openai.monthly"),
     "metadata.name of an LLMBudget must be a DNS label"),
    ("cluster-selector-values", _cluster,
     _spec(lambda s: s["namespaceSelector"].update(
         matchExpressions=[{"key": "tier", "operator": "Exists", "values": ["paid"]}])),
     "spec.namespaceSelector.matchExpressions[0].values: Invalid value: \"object\": values "
     "must be non-empty for In and NotIn and empty for Exists and DoesNotExist"),
    ("cluster-selector-operator", _cluster,
     _spec(lambda s: s["namespaceSelector"].update(
         matchExpressions=[{"key": "tier", "operator": "Equals", "values": ["paid"]}])),
     "spec.namespaceSelector.matchExpressions[0].operator: Unsupported value: \"Equals\""),
    ("cluster-negative-limit", _cluster, _spec(lambda s: s.update(limitUSD=-5)),
     "spec.limitUSD: Invalid value: -5"),
    ("cluster-bad-time-zone", _cluster, _spec(lambda s: s.update(timezone="Mars/Olympus_Mons")),
     "spec.timezone: Invalid value: \"object\": timezone must be an IANA time zone name"),
    ("cluster-period-enum", _cluster, _spec(lambda s: s.update(period="Hourly")),
     "spec.period: Unsupported value: \"Hourly\""),
    ("cluster-threshold-duplicate", _cluster, _spec(lambda s: s.update(alertThresholds=[90, 90])),
     "spec.alertThresholds[1]: Duplicate value: 90"),
    ("cluster-provider-and-providers", _cluster,
     _spec(lambda s: s.update(providers=["anthropic"])),
     "spec.providers: Invalid value: \"object\": set provider or providers, not both"),
    ("cluster-name-dns-label", _cluster, lambda o: o["metadata"].update(name="Org"),
     "metadata.name of a ClusterLLMBudget must be a DNS label"),
]  # fmt: skip


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_objects_are_refused_naming_the_field(
    kube: Kube, crds: None, namespace: str, case: tuple[str, Callable[[], Any], Edit, str]
) -> None:
    _, base, edit, expected = case
    valid = base()
    # the unedited object is accepted (dry run), so the edit alone is what is refused
    kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(valid))
    edit(valid)
    text = json.dumps(valid)
    refused = kube.kubectl("create", "-n", namespace, "-f", "-", input=text, check=False)
    assert refused.returncode != 0, refused.stdout
    assert expected in refused.stderr, refused.stderr
    assert "is invalid" in refused.stderr
