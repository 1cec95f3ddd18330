"""The rollout API on the real API server: every rule of ``spec.rollout`` refuses a
bad object at ``kubectl apply``, naming the field (OpenAPI bounds and CEL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.controlplane.kube import Kube

pytestmark = pytest.mark.kube

Edit = Callable[[dict[str, Any]], Any]


def _route() -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "bad-rollout"},
        "spec": {
            "providers": [
                {"name": "local", "type": "ollama", "models": {"default": "gemma3:4b"}},
                {"name": "dashscope", "type": "dashscope", "models": {"default": "qwen-plus"}},
            ],
            "default": {"provider": "local"},
            "rollout": {
                "candidate": {
                    "default": {"provider": "dashscope"},
                    "fallback": ["local"],
                    "providerModels": {"dashscope": {"default": "qwen-max"}},
                },
                "steps": [10, 30, 50, 75, 100],
                "interval": "30s",
                "stickiness": {"header": "X-Aegis-User"},
                "analysis": {
                    "maxErrorRate": 0.05,
                    "maxP95LatencyMs": 1000,
                    "maxCostUSDPerDay": 10,
                    "maxCostPerRequestRatio": 1.5,
                    "minRequests": 100,
                },
            },
        },
    }


def _rollout(edit: Callable[[dict[str, Any]], Any]) -> Edit:
    return lambda obj: edit(obj["spec"]["rollout"])


def _analysis(**fields: Any) -> Edit:
    return _rollout(lambda r: r["analysis"].update(fields))


# (id, edit, text the API server's message must contain)
INVALID: list[tuple[str, Edit, str]] = [
    ("provider-models-unknown-provider",
     _rollout(lambda r: r["candidate"]["providerModels"].update(nope={"default": "x"})),
     "spec.rollout.candidate.providerModels: Invalid value: \"object\": every "
     "rollout.candidate.providerModels key must name a provider"),
    ("provider-models-need-default",
     _rollout(lambda r: r["candidate"]["providerModels"].update(dashscope={"vision": ["a"]})),
     "spec.rollout.candidate.providerModels.dashscope.default: Required value"),
    ("candidate-fallback-unknown",
     _rollout(lambda r: r["candidate"].update(fallback=["nope"])),
     "spec.rollout.candidate.fallback: Invalid value: \"object\": every "
     "rollout.candidate.fallback entry must name a provider"),
    ("candidate-fallback-duplicate",
     _rollout(lambda r: r["candidate"].update(fallback=["local", "local"])),
     "spec.rollout.candidate.fallback: Invalid value: \"object\": fallback entries must be "
     "unique"),
    ("candidate-default-unknown",
     _rollout(lambda r: r["candidate"].update(default={"provider": "nope"})),
     "spec.rollout.candidate.default.provider: Invalid value: \"object\": "
     "rollout.candidate.default.provider must name a provider"),
    ("candidate-required", _rollout(lambda r: r.pop("candidate")),
     "spec.rollout.candidate: Required value"),
    ("steps-too-many", _rollout(lambda r: r.update(steps=list(range(80, 101)))),
     "spec.rollout.steps: Too many: 21: must have at most 20 items"),
    ("steps-duplicate", _rollout(lambda r: r.update(steps=[10, 10, 100])),
     "spec.rollout.steps: Invalid value: \"object\": steps must be strictly ascending"),
    ("interval-too-long", _rollout(lambda r: r.update(interval="2161h")),
     "spec.rollout.interval: Invalid value: \"object\": interval must be between 1s and 2160h"),
    ("stickiness-header", _rollout(lambda r: r.update(stickiness={"header": "X User"})),
     "spec.rollout.stickiness.header: Invalid value: \"X User\""),
    ("error-rate-negative", _analysis(maxErrorRate=-0.1),
     "spec.rollout.analysis.maxErrorRate: Invalid value: -0.1"),
    ("p95-zero", _analysis(maxP95LatencyMs=0),
     "spec.rollout.analysis.maxP95LatencyMs: Invalid value: 0"),
    ("cost-per-day-negative", _analysis(maxCostUSDPerDay=-1),
     "spec.rollout.analysis.maxCostUSDPerDay: Invalid value: -1"),
    ("cost-ratio-zero", _analysis(maxCostPerRequestRatio=0),
     "spec.rollout.analysis.maxCostPerRequestRatio: Invalid value: 0"),
    ("min-requests-zero", _analysis(minRequests=0),
     "spec.rollout.analysis.minRequests: Invalid value: 0"),
    ("paused-not-bool", _rollout(lambda r: r.update(paused="yes")),
     "spec.rollout.paused: Invalid value: \"string\""),
    ("abort-and-promote", _rollout(lambda r: r.update(abort=True, promote=True)),
     "spec.rollout.promote: Invalid value: \"object\": abort and promote cannot both be set"),
    ("misspelt-control", _rollout(lambda r: r.update(pause=True)),
     "unknown field \"spec.rollout.pause\""),
]  # fmt: skip


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_rollouts_are_refused_naming_the_field(
    kube: Kube, crds: None, namespace: str, case: tuple[str, Edit, str]
) -> None:
    _, edit, expected = case
    valid = _route()
    # the unedited object is accepted (dry run), so the edit alone is what is refused
    kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(valid))
    edit(valid)
    refused = kube.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(valid), check=False
    )
    assert refused.returncode != 0, refused.stdout
    assert expected in refused.stderr, refused.stderr


def test_the_rollout_is_explained(kube: Kube, crds: None) -> None:
    text = " ".join(kube.kubectl("explain", "llmroute.spec.rollout").stdout.split())
    assert "aegis.io/rollout-action" in text and "restart" in text
    analysis = " ".join(kube.kubectl("explain", "llmroute.spec.rollout.analysis").stdout.split())
    assert "rolls back with reason ErrorRate" in analysis
    assert "extrapolated to 24 h" in analysis
