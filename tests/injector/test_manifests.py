"""The webhook configuration's safety properties, the RBAC, and the generated docs."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from aegis.operator.injector import doc, manifests
from aegis.operator.injector.selectors import matches

CONFIG = manifests.webhook_configuration(namespace="aegis-system")


def selected(
    hook: dict[str, Any], pod_labels: dict[str, str], ns: str, ns_labels: dict[str, str]
) -> bool:
    """Would the API server send this pod to this webhook entry?"""
    namespace_labels = {**ns_labels, "kubernetes.io/metadata.name": ns}
    return matches(hook["objectSelector"], pod_labels) and matches(
        hook["namespaceSelector"], namespace_labels
    )


@pytest.mark.parametrize(
    ("pod_value", "ns_value", "ns", "expected"),
    [
        ("true", None, "shop", "pod.inject.aegis.io"),
        ("true", "enabled", "shop", "pod.inject.aegis.io"),
        (None, "enabled", "shop", "namespace.inject.aegis.io"),
        ("yes", "enabled", "shop", "namespace.inject.aegis.io"),
        ("false", "enabled", "shop", None),
        (None, None, "shop", None),
        ("false", None, "shop", None),
        ("true", "enabled", "kube-system", None),
        ("true", "enabled", "aegis-system", None),
        (None, "enabled", "aegis-system", None),
    ],
)
def test_each_pod_reaches_at_most_one_entry(
    pod_value: str | None, ns_value: str | None, ns: str, expected: str | None
) -> None:
    pod_labels = {"app": "x"} | ({"aegis.io/inject": pod_value} if pod_value else {})
    ns_labels = {"aegis.io/inject": ns_value} if ns_value else {}
    hits = [h["name"] for h in CONFIG["webhooks"] if selected(h, pod_labels, ns, ns_labels)]
    assert hits == ([expected] if expected else [])


def test_fail_closed_but_bounded() -> None:
    for hook in CONFIG["webhooks"]:
        assert hook["failurePolicy"] == "Fail"
        assert 1 <= hook["timeoutSeconds"] <= 5
        assert hook["sideEffects"] == "None"
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["rules"] == [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        assert hook["clientConfig"]["service"]["namespace"] == "aegis-system"
    with pytest.raises(ValueError, match=r"1\.\.5"):
        manifests.webhook_configuration(timeout_seconds=10)


def test_url_mode_and_cert_manager_annotation() -> None:
    config = manifests.webhook_configuration(
        url="https://127.0.0.1:9443/", ca_bundle="Q0E=", cert_manager_certificate="ns/cert"
    )
    assert [h["clientConfig"] for h in config["webhooks"]] == [
        {"url": "https://127.0.0.1:9443/inject/pod", "caBundle": "Q0E="},
        {"url": "https://127.0.0.1:9443/inject/namespace", "caBundle": "Q0E="},
    ]
    assert config["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "ns/cert"}


def test_rbac_has_no_wildcards_and_names_its_objects() -> None:
    objects = manifests.rbac(namespace="aegis-system")
    rules = [r for o in objects for r in o.get("rules", [])]
    for rule in rules:
        assert "*" not in itertools.chain(rule["verbs"], rule["resources"], rule["apiGroups"])
        assert not {"delete", "deletecollection", "escalate", "bind"} & set(rule["verbs"])
    named = {r["resources"][0]: r.get("resourceNames") for r in rules if "get" in r["verbs"]}
    assert named["mutatingwebhookconfigurations"] == ["aegis-injector"]
    assert named["secrets"] == ["aegis-injector-tls"]
    cert_manager = manifests.rbac(namespace="aegis-system", webhook_config=None, tls_secret=None)
    assert [o["kind"] for o in cert_manager] == [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ]
    assert len(cert_manager[1]["rules"]) == 1


def test_docs_are_current() -> None:
    text = doc.DOC.read_text()
    assert doc.update(text) == text, "run: python -m aegis.operator.injector.doc"
