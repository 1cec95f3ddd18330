"""Acceptance: the injector behind a real kube-apiserver (pods created with kubectl).

The API server calls ``aegis injector`` (a subprocess, authenticated with the
ServiceAccount token of the rendered RBAC) on ``https://127.0.0.1:<port>``; every
assertion is on what the API server returns and stores.
"""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any

import pytest
from cryptography import x509

from aegis.operator.api.naming import (
    CONFIG_HASH_ANNOTATION,
    INJECT_LABEL,
    INJECTED_ANNOTATION,
    ROUTE_ANNOTATION,
)
from tests.controlplane.kube import Kube
from tests.controlplane.procs import wait_until
from tests.injector.conftest import Injector, start_injector
from tests.injector.helpers import env_of, pod

pytestmark = [pytest.mark.kube]


def llmroute(name: str, selector: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "providers": [
            {
                "name": "local",
                "type": "ollama",
                "locality": "local",
                "baseURL": "http://ollama.invalid:11434",
                "models": {"default": "gemma3:4b"},
            },
            {
                "name": "openai",
                "type": "openai",
                "apiKeySecretRef": {"name": "openai", "key": "apiKey"},
                "models": {"default": "gpt-4o-mini"},
            },
        ],
        "default": {"provider": "local"},
    }
    if selector is not None:
        spec["podSelector"] = selector
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(kube: Kube, namespace: str, obj: dict[str, Any]) -> Any:
    return kube.kubectl_json("create", "-n", namespace, "-f", "-", input=json.dumps(obj))


def refused(kube: Kube, namespace: str, obj: dict[str, Any]) -> str:
    done = kube.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert done.returncode != 0, f"created although it should be refused: {done.stdout}"
    return done.stderr


def opted_in(name: str, app: str = "web", **kwargs: Any) -> dict[str, Any]:
    return pod(name, labels={"app": app, INJECT_LABEL: "true"}, **kwargs)


@pytest.fixture
def team(kube: Kube, namespace: str, injector: Injector) -> str:
    """A namespace in the injector's scope, with one route for app=web and a Secret."""
    injector.scope(namespace)
    kube.apply(llmroute("web-route", {"matchLabels": {"app": "web"}}), namespace)
    kube.kubectl(
        "create", "secret", "generic", "openai", "-n", namespace, "--from-literal=apiKey=sk-x"
    )
    injector.wait_effective(namespace, opted_in("probe"))
    return namespace


def test_labelled_pod_comes_back_injected(kube: Kube, team: str, injector: Injector) -> None:
    kube.kubectl(
        "patch", "llmroute", "web-route", "-n", team, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"configHash": "0123456789abcdef"}}),
    )  # fmt: skip

    def hash_seen() -> dict[str, Any] | None:
        out = kube.kubectl(
            "create", "-n", team, "--dry-run=server", "-o", "json", "-f", "-",
            input=json.dumps(opted_in("dry")),
        )  # fmt: skip
        created: dict[str, Any] = json.loads(out.stdout)
        return (
            created
            if created["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] != "pending"
            else None
        )

    wait_until(hash_seen, timeout=30, what="the route status to reach the injector's cache")
    created = create(kube, team, opted_in("web-1"))
    stored = kube.kubectl_json("get", "pod", "web-1", "-n", team)
    for obj in (created, stored):
        annotations = obj["metadata"]["annotations"]
        assert annotations[INJECTED_ANNOTATION].startswith("aegis-injector/")
        assert annotations[CONFIG_HASH_ANNOTATION] == "0123456789abcdef"
        assert annotations[ROUTE_ANNOTATION] == "web-route"
        [sidecar] = obj["spec"]["initContainers"]
        assert sidecar["name"] == "aegis-sidecar"
        assert sidecar["restartPolicy"] == "Always"  # v1.34: native sidecar
        assert sidecar["image"] == "registry.invalid/aegis:test"
        env = env_of(sidecar)
        assert env["AEGIS_KEY_OPENAI"] == {"secretKeyRef": {"name": "openai", "key": "apiKey"}}
        assert env["AEGIS_LEDGER_DSN"] == {"secretKeyRef": {"name": "aegis-ledger", "key": "dsn"}}
        volumes = {v["name"]: v for v in obj["spec"]["volumes"]}
        assert volumes["aegis-config"]["configMap"]["name"] == "aegis-route-web-route"
        [app] = obj["spec"]["containers"]
        port = injector.sidecar_port
        assert env_of(app)["OPENAI_BASE_URL"] == f"http://127.0.0.1:{port}/v1"
        assert env_of(app)["AEGIS_URL"] == f"http://127.0.0.1:{port}"
        assert env_of(app)["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{port}"


def test_unlabelled_pod_is_returned_unchanged(kube: Kube, team: str) -> None:
    plain = pod("plain", labels={"app": "web"})
    created = create(kube, team, plain)
    assert "annotations" not in created["metadata"]
    assert "initContainers" not in created["spec"]
    assert [c["name"] for c in created["spec"]["containers"]] == ["app"]
    assert "env" not in created["spec"]["containers"][0]
    assert [v["name"] for v in created["spec"].get("volumes") or []] == []


def test_deployment_pod_template_is_not_touched(kube: Kube, team: str) -> None:
    template = opted_in("ignored")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": template["metadata"]["labels"]},
                "spec": template["spec"],
            },
        },
    }
    created = create(kube, team, deployment)
    spec = created["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert "annotations" not in created["spec"]["template"]["metadata"]
    assert "env" not in spec["containers"][0]


def test_a_replicaset_pod_is_attributed_to_its_deployment(kube: Kube, team: str) -> None:
    """As the ReplicaSet controller creates it: generateName, owner, pod-template-hash."""
    replicaset = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web-7d9f8b6c5d"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d9f8b6c5d"}},
            "template": {
                "metadata": {"labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d"}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }
    owner = create(kube, team, replicaset)["metadata"]
    kube.kubectl("create", "serviceaccount", "shop", "-n", team)
    member = opted_in("", serviceAccountName="shop")
    member["metadata"] = {
        "generateName": "web-7d9f8b6c5d-",
        "labels": {**member["metadata"]["labels"], "pod-template-hash": "7d9f8b6c5d"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": owner["name"],
                "uid": owner["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    created = create(kube, team, member)
    stored = kube.kubectl_json("get", "pod", created["metadata"]["name"], "-n", team)
    [sidecar] = stored["spec"]["initContainers"]
    env = env_of(sidecar)
    assert env["AEGIS_WORKLOAD"] == "Deployment/web"
    assert env["AEGIS_SERVICE_ACCOUNT"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "spec.serviceAccountName"}
    }
    assert stored["spec"]["serviceAccountName"] == "shop"


def test_opt_in_by_namespace_and_opt_out(kube: Kube, namespace: str, injector: Injector) -> None:
    injector.scope(namespace, inject="enabled")
    kube.apply(llmroute("all", {}), namespace)
    injector.wait_effective(namespace, pod("probe"))

    created = create(kube, namespace, pod("unlabelled", labels={"app": "any"}))
    assert created["metadata"]["annotations"][ROUTE_ANNOTATION] == "all"
    assert created["spec"]["initContainers"][0]["name"] == "aegis-sidecar"

    out = create(kube, namespace, pod("opted-out", labels={"app": "any", INJECT_LABEL: "false"}))
    assert "initContainers" not in out["spec"]
    assert INJECTED_ANNOTATION not in (out["metadata"].get("annotations") or {})


def test_no_route_and_several_routes_are_refused_naming_none(
    kube: Kube, team: str, injector: Injector
) -> None:
    message = refused(kube, team, opted_in("lonely", app="api"))
    assert 'admission webhook "pod.inject.aegis.io" denied the request' in message
    assert "no LLMRoute in namespace" in message
    assert "web-route" not in message and "app=web" not in message

    kube.apply(llmroute("catch-all", {}), team)

    def second_route_seen() -> str | None:
        text = refused(kube, team, opted_in("twice"))
        return text if "multiple" in text or "selected by 2" in text else None

    message = wait_until(second_route_seen, timeout=30, what="the second route in the cache")
    assert "selected by 2 LLMRoutes" in message
    assert "catch-all" not in message and "web-route" not in message

    message = refused(kube, team, opted_in("typo", annotations={ROUTE_ANNOTATION: "nope"}))
    assert "names LLMRoute 'nope'" in message
    # The annotation settles the ambiguity.
    chosen = create(kube, team, opted_in("chosen", annotations={ROUTE_ANNOTATION: "catch-all"}))
    assert chosen["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == "pending"

    # Deleting the second route (a watch event) makes the selector unambiguous again.
    kube.kubectl("delete", "llmroute", "catch-all", "-n", team, "--wait=false")

    def injected_again() -> str | None:
        done = kube.kubectl(
            "create", "-n", team, "--dry-run=server", "-o", "json", "-f", "-",
            input=json.dumps(opted_in("again")), check=False,
        )  # fmt: skip
        return done.stdout if done.returncode == 0 else None

    again = json.loads(wait_until(injected_again, timeout=30, what="the deletion in the cache"))
    assert again["metadata"]["annotations"][ROUTE_ANNOTATION] == "web-route"


def test_conflicting_container_name_is_refused(kube: Kube, team: str) -> None:
    containers = [
        {"name": "app", "image": "registry.invalid/app:1"},
        {"name": "aegis-sidecar", "image": "registry.invalid/mine:1"},
    ]
    message = refused(kube, team, opted_in("clash", containers=containers))
    assert "already has a container named aegis-sidecar" in message


def test_ca_bundle_secret_metrics_and_serving_certificate(kube: Kube, injector: Injector) -> None:
    secret = kube.kubectl_json("get", "secret", "aegis-injector-tls", "-n", injector.namespace)
    bundle = base64.b64decode(secret["data"]["ca-bundle.crt"])
    config = kube.kubectl_json("get", "mutatingwebhookconfiguration", injector.name)
    assert {base64.b64decode(h["clientConfig"]["caBundle"]) for h in config["webhooks"]} == {bundle}
    assert [h["failurePolicy"] for h in config["webhooks"]] == ["Fail", "Fail"]
    assert all(h["timeoutSeconds"] <= 5 for h in config["webhooks"])

    served = ssl.get_server_certificate((kube.webhook_host, injector.port))
    assert served.encode() == base64.b64decode(secret["data"]["tls.crt"])
    leaf = x509.load_pem_x509_certificate(served.encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"aegis-injector.{injector.namespace}.svc" in names.get_values_for_type(x509.DNSName)

    text = injector.metrics()
    assert 'aegis_injector_admissions_total{outcome="injected",reason="injected"}' in text
    assert 'aegis_injector_admissions_total{outcome="refused",reason="no-route"}' in text
    assert 'aegis_injector_admissions_total{outcome="skipped",reason="opt-out"}' in text
    assert "aegis_injector_routes_synced 1.0" in text


def test_rbac_is_least_privilege(kube: Kube, injector: Injector) -> None:
    who = f"system:serviceaccount:{injector.namespace}:{injector.service_account}"

    def can(*args: str) -> bool:
        done = kube.kubectl("auth", "can-i", "--as", who, *args, check=False)
        return done.stdout.strip() == "yes"

    assert can("list", "llmroutes.aegis.io", "--all-namespaces")
    assert can("watch", "llmroutes.aegis.io", "--all-namespaces")
    assert can("patch", f"mutatingwebhookconfiguration/{injector.name}")
    assert can("update", "secret/aegis-injector-tls", "-n", injector.namespace)
    assert not can("patch", "mutatingwebhookconfiguration/other")
    assert not can("list", "mutatingwebhookconfigurations")
    assert not can("get", "secret/openai", "-n", injector.namespace)
    assert not can("get", "secrets", "-n", "default")
    assert not can("list", "pods", "--all-namespaces")
    assert not can("list", "configmaps", "--all-namespaces")
    assert not can("list", "namespaces")
    assert not can("update", "llmroutes.aegis.io", "-n", "default")


def test_stopped_webhook_refuses_opted_in_pods_only(
    kube: Kube, namespace: str, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    enabled = kube.create_namespace("enabled")
    try:
        with start_injector(kube, tmp_path_factory.mktemp("stopped")) as stopped:
            stopped.scope(namespace)
            stopped.scope(enabled, inject="enabled")
            kube.apply(llmroute("web-route", {"matchLabels": {"app": "web"}}), namespace)
            stopped.wait_effective(namespace, opted_in("probe"))
            stopped.wait_effective(enabled, pod("probe", labels={"app": "web"}))
            stopped.stop()

            message = refused(kube, namespace, opted_in("wants-sidecar"))
            assert 'failed calling webhook "pod.inject.aegis.io"' in message
            message = refused(kube, enabled, pod("ns-opted-in", labels={"app": "web"}))
            assert 'failed calling webhook "namespace.inject.aegis.io"' in message

            # Pods that did not opt in never reach the webhook, so they do not notice.
            assert create(kube, namespace, pod("plain", labels={"app": "web"}))
            opted_out = pod("out", labels={"app": "web", INJECT_LABEL: "false"})
            assert "initContainers" not in create(kube, enabled, opted_out)["spec"]
            # Nor does anything in the injector's own namespace (it can always restart).
            assert create(kube, stopped.namespace, opted_in("own-namespace"))
    finally:
        kube.delete_namespace(enabled)


def test_serving_certificate_rotates_without_restart(
    kube: Kube, namespace: str, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    short = ("--leaf-validity", "90s", "--leaf-renew-before", "80s")
    with start_injector(kube, tmp_path_factory.mktemp("rotating"), *short) as rotating:
        rotating.scope(namespace)
        kube.apply(llmroute("web-route", {"matchLabels": {"app": "web"}}), namespace)
        rotating.wait_effective(namespace, opted_in("probe"))
        pid = rotating.process.pid

        def serial() -> int:
            pem = ssl.get_server_certificate((kube.webhook_host, rotating.port))
            return x509.load_pem_x509_certificate(pem.encode()).serial_number

        first = serial()
        wait_until(lambda: serial() != first, timeout=30, what="a rotated certificate")
        assert rotating.process.pid == pid and rotating.process.running
        created = create(kube, namespace, opted_in("after-rotation"))
        assert created["spec"]["initContainers"][0]["name"] == "aegis-sidecar"


def test_replicas_started_together_share_one_certificate(
    kube: Kube, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two replicas racing to create the TLS Secret converge on one CA and certificate."""
    workdir = tmp_path_factory.mktemp("replicas")
    with start_injector(kube, workdir, start=False) as first:
        second = first.replica(workdir)
        first.process.start()
        second.process.start()
        try:
            for replica in (first, second):
                wait_until(replica.ready, timeout=60, what=f"{replica.process.name} ready")
            secret = kube.kubectl_json("get", "secret", "aegis-injector-tls", "-n", first.namespace)
            stored = base64.b64decode(secret["data"]["tls.crt"])

            def served(replica: Injector) -> bytes:
                pem = ssl.get_server_certificate((kube.webhook_host, replica.port))
                return pem.encode()

            assert served(first) == served(second) == stored
        finally:
            second.stop()


def test_injected_sidecar_passes_pod_security_restricted(kube: Kube, team: str) -> None:
    """The sidecar adds nothing the `restricted` Pod Security Standard forbids."""
    kube.kubectl(
        "label", "namespace", team, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    hardened = {
        "name": "app",
        "image": "registry.invalid/app:1",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    created = create(kube, team, opted_in("restricted", containers=[hardened]))
    assert created["spec"]["initContainers"][0]["name"] == "aegis-sidecar"
    # The same pod without the app's hardening is refused by Pod Security, not by us.
    message = refused(kube, team, opted_in("lax"))
    assert "violates PodSecurity" in message and '"app"' in message
    assert '"aegis-sidecar"' not in message


def test_secret_precreated_by_a_chart_is_filled_in(
    kube: Kube, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A chart may create the (empty) TLS Secret so the injector needs no create right."""
    with start_injector(kube, tmp_path_factory.mktemp("precreated"), start=False) as injector:
        kube.kubectl(
            "create", "secret", "generic", "aegis-injector-tls", "-n", injector.namespace
        )  # fmt: skip
        kube.kubectl(
            "annotate", "secret", "aegis-injector-tls", "-n", injector.namespace,
            "helm.sh/resource-policy=keep",
        )  # fmt: skip
        injector.start()
        secret = kube.kubectl_json("get", "secret", "aegis-injector-tls", "-n", injector.namespace)
        assert {"ca.crt", "tls.crt", "tls.key", "ca-bundle.crt"} <= set(secret["data"])
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
