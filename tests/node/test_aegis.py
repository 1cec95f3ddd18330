"""Aegis in pods: the chart's operator and injector, a route, an injected app, a request.

The session's `helm install` of ``helm/aegis`` (:mod:`tests.node.release`, the image
imported into the node, pull policy Never) runs ``aegis operator`` (one replica) and
``aegis injector`` (two replicas and its MutatingWebhookConfiguration). A test
namespace then gets a fake OpenAI upstream as a Deployment behind a Service, an
`LLMRoute` pointing at that Service by its DNS name, and an app pod opted in for
injection; from inside the app container a request to the sidecar on 127.0.0.1:8787 is
answered by the fake, through CoreDNS and kube-proxy.

These namespaces bring their own ledger Secret (a SQLite file on each pod's emptyDir),
which the operator leaves alone: these tests are about pods; the shared Postgres ledger
is :mod:`tests.node.test_product`'s.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.controlplane.procs import wait_until
from tests.node.conftest import NodeCluster, Say
from tests.node.release import RELEASE_NS, Release
from tests.node.workloads import fake_upstream, http_client_code, python_pod

pytestmark = [pytest.mark.node, pytest.mark.slow]

SIDECAR_URL = "http://127.0.0.1:8787/v1/chat/completions"


def _ledger_secret(dsn: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "aegis-ledger"},
        "stringData": {"dsn": dsn},
    }


def _route(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "proof"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "proof"}},
            "providers": [
                {
                    "name": "openai",
                    "type": "openai",
                    # In the cluster, like a self-hosted model: no other provider needed
                    # for the local-only privacy classes.
                    "locality": "local",
                    "baseURL": f"http://fake-openai.{namespace}.svc.cluster.local/v1",
                    "apiKeySecretRef": {"name": "openai", "key": "apiKey"},
                    "models": {"default": "gpt-4o-mini"},
                }
            ],
            "default": {"provider": "openai"},
        },
    }


def _ready(kube: Any, namespace: str) -> dict[str, Any] | None:
    route = kube.kubectl_json("-n", namespace, "get", "llmroute", "proof")
    conditions = {c["type"]: c for c in route.get("status", {}).get("conditions", [])}
    ready = conditions.get("Ready")
    return route if ready and ready["status"] == "True" else None


def _routed_namespace(cluster: NodeCluster, ns: str) -> dict[str, Any]:
    """Secrets, the fake upstream and the route in `ns`; returns the Ready route."""
    kube = cluster.kube
    kube.apply(_ledger_secret("sqlite+aiosqlite:////var/lib/aegis/ledger.db"), ns)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "openai"},
            "stringData": {"apiKey": "sk-node-test"},
        },
        ns,
    )
    fake_upstream(kube, ns, cluster.images.aegis.short)
    kube.apply(_route(ns), ns)
    try:
        route: dict[str, Any] = wait_until(
            lambda: _ready(kube, ns), timeout=90, what="LLMRoute proof Ready", interval=0.5
        )
    except TimeoutError as error:
        status = kube.kubectl("-n", ns, "get", "llmroute", "proof", "-o", "yaml").stdout
        logs = kube.kubectl(
            "-n", RELEASE_NS, "logs", "deployment/aegis-operator", "--tail=40", check=False
        )
        pods = kube.kubectl("-n", RELEASE_NS, "get", "pods", check=False).stdout
        raise AssertionError(f"{error}\n{status}\n{pods}\noperator log:\n{logs.stdout}") from None
    return route


def test_chart_runs_the_operator_and_the_injector(
    cluster: NodeCluster, release: Release, say: Say
) -> None:
    pods = cluster.kube.kubectl_json("-n", release.namespace, "get", "pods")["items"]
    ready = {
        pod["metadata"]["name"]: all(s["ready"] for s in pod["status"]["containerStatuses"])
        for pod in pods
        if pod["status"].get("phase") != "Succeeded"  # the migration Job's
    }
    operators = [name for name in ready if "-operator-" in name]
    injectors = [name for name in ready if "-injector-" in name]
    databases = [name for name in ready if "-postgresql-" in name]
    assert len(operators) == 1 and len(injectors) == 2 and len(databases) == 1, ready
    assert all(ready.values()), ready
    webhooks = cluster.kube.kubectl("get", "mutatingwebhookconfigurations", "-o", "name").stdout
    assert "aegis" in webhooks
    say(release.kubectl("get", "pods", "-o", "wide"))


def test_operator_renders_a_route_into_its_configmap(
    cluster: NodeCluster, release: Release, ns: str, say: Say
) -> None:
    route = _routed_namespace(cluster, ns)
    configmap = cluster.kube.kubectl_json("-n", ns, "get", "configmap", "aegis-route-proof")
    config = configmap["data"]["config.yaml"]
    assert f"fake-openai.{ns}.svc.cluster.local" in config
    assert route["status"].get("configHash"), route["status"]
    say(f"LLMRoute {ns}/proof Ready, ConfigMap aegis-route-proof:\n{config}")


def test_injected_app_calls_the_fake_upstream_through_its_sidecar(
    cluster: NodeCluster, release: Release, ns: str, say: Say
) -> None:
    kube, image = cluster.kube, cluster.images.aegis.short
    _routed_namespace(cluster, ns)
    app = python_pod(
        "app",
        image,
        "import time; time.sleep(3600)",  # the pod idles: pacing, not a wait
        labels={"app": "proof", "aegis.io/inject": "true"},
    )
    app["spec"]["terminationGracePeriodSeconds"] = 1
    kube.apply(app, ns)
    kube.kubectl(
        "-n", ns, "wait", "pod/app", "--for=condition=Ready", "--timeout=180s", timeout=200
    )
    pod = kube.kubectl_json("-n", ns, "get", "pod", "app")
    statuses = pod["status"].get("initContainerStatuses", []) + pod["status"]["containerStatuses"]
    running = {s["name"]: ("running" in s["state"], s["ready"]) for s in statuses}
    assert running == {"aegis-sidecar": (True, True), "main": (True, True)}, running
    app_env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
    assert app_env.get("OPENAI_BASE_URL") == "http://127.0.0.1:8787/v1"
    say(kube.kubectl("-n", ns, "get", "pod", "app", "-o", "wide").stdout)
    say(f"containers: {running}")

    body = {"model": "auto", "messages": [{"role": "user", "content": "hello from the node"}]}
    done = kube.kubectl(
        "-n",
        ns,
        "exec",
        "app",
        "-c",
        "main",
        "--",
        "python3",
        "-c",
        http_client_code(SIDECAR_URL, body),
        timeout=90,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    headers = {k.lower(): v for k, v in answer["headers"].items()}
    assert answer["status"] == 200, answer
    assert headers["x-aegis-provider"] == "openai", headers
    assert headers["x-aegis-model"] == "gpt-4o-mini", headers
    assert answer["body"]["choices"][0]["message"]["content"], answer["body"]
    fake_log = kube.kubectl("-n", ns, "logs", "deployment/fake-openai").stdout
    say(
        f"POST {SIDECAR_URL} from the app container -> {answer['status']}, "
        f"provider={headers['x-aegis-provider']} model={headers['x-aegis-model']} "
        f"route={headers.get('x-aegis-rule')}: {answer['body']['choices'][0]['message']}"
    )
    say(f"fake upstream log:\n{fake_log[-1500:]}")
