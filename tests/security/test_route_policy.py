"""A hostile route author against the platform's guardrails, on the real API server with
the chart's ValidatingAdmissionPolicy: a route may not send a provider's key to a host
the platform did not allow for its type, call a cloud provider local, or keep fewer data
classes local or detection off; each refusal names the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.controlplane.kube import Kube

pytestmark = pytest.mark.kube

OLLAMA = {"name": "local", "type": "ollama", "models": {"default": "gemma3:4b"}}


def route(*providers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "chat"},
        "spec": {"providers": list(providers), "default": {"provider": "local"}, **spec},
    }


def refusal(kube: Kube, namespace: str, obj: dict[str, Any]) -> str:
    """The API server's refusal of ``obj`` (the test fails if it is accepted)."""
    done = kube.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    if done.returncode == 0:
        kube.kubectl("delete", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert done.returncode != 0, f"accepted: {json.dumps(obj['spec'])}"
    return done.stderr


@pytest.mark.parametrize(
    ("provider", "field", "detail"),
    [
        (
            {"name": "openai", "type": "openai", "baseURL": "https://collector.example/v1",
             "apiKeySecretRef": {"name": "openai", "key": "apiKey"},
             "models": {"default": "gpt-4o"}},
            "spec.providers[1].baseURL",
            "https://collector.example/v1 is not an allowed baseURL for provider type openai",
        ),
        (
            {"name": "claude", "type": "anthropic", "baseURL": "https://collector.example/v1",
             "apiKeySecretRef": {"name": "anthropic", "key": "apiKey"},
             "models": {"default": "claude-sonnet-4-5"}},
            "spec.providers[1].baseURL",
            "https://collector.example/v1 is not an allowed baseURL for provider type anthropic",
        ),
        (
            {"name": "model", "type": "ollama", "baseURL": "http://collector.example:11434",
             "models": {"default": "gemma3:4b"}},
            "spec.providers[1].baseURL",
            "is not an allowed baseURL for provider type ollama",
        ),
        (
            {"name": "openai", "type": "openai", "locality": "local",
             "models": {"default": "gpt-4o"}},
            "spec.providers[1].locality",
            "provider openai (type openai) may not be local",
        ),
    ],
)  # fmt: skip
def test_a_foreign_base_url_or_a_false_local_provider_is_refused(
    kube: Kube, scoped: str, provider: dict[str, Any], field: str, detail: str
) -> None:
    message = refusal(kube, scoped, route(OLLAMA, provider))
    assert f"{field}: " in message and detail in message, message


@pytest.mark.parametrize(
    ("privacy", "expected"),
    [
        ({"localOnly": []}, "spec.privacy.localOnly: must include pii, hipaa, confidential"),
        ({"localOnly": ["pii"]}, "spec.privacy.localOnly: must include hipaa, confidential"),
        ({"detect": False}, "spec.privacy.detect: must be true"),
    ],
)
def test_a_weakened_privacy_set_is_refused(
    kube: Kube, scoped: str, privacy: dict[str, Any], expected: str
) -> None:
    message = refusal(kube, scoped, route(OLLAMA, privacy=privacy))
    assert expected in message, message


def test_routes_within_the_policy_are_admitted_and_deletable(kube: Kube, scoped: str) -> None:
    good = route(
        {**OLLAMA, "baseURL": "http://ollama.models.svc.cluster.local:11434"},
        {"name": "openai", "type": "openai", "models": {"default": "gpt-4o"}},
        {"name": "dash", "type": "dashscope",
         "baseURL": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
         "models": {"default": "qwen-plus"}},
        {"name": "claude", "type": "anthropic", "baseURL": "https://api.anthropic.com/v1",
         "models": {"default": "claude-sonnet-4-5"}},
    )  # fmt: skip
    kube.apply(good, scoped)
    # Metadata-only writes (a finalizer, as the operator adds and removes it) pass.
    patch = '{"metadata": {"finalizers": ["aegis.io/cleanup"]}}'
    kube.kubectl("patch", "llmroute", "chat", "-n", scoped, "--type=merge", "-p", patch)
    kube.kubectl(
        "patch", "llmroute", "chat", "-n", scoped, "--type=merge",
        "-p", '{"metadata": {"finalizers": null}}',
    )  # fmt: skip
    kube.kubectl("delete", "llmroute", "chat", "-n", scoped)
