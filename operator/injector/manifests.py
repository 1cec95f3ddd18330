"""The MutatingWebhookConfiguration and the injector's RBAC as plain objects.

One source for the Helm chart, the docs (``docs/injector.md`` is generated from
here and a test keeps it current) and the tests, which apply exactly these objects
to a real API server.

Safety rests on the selectors, not on the server being up:

- two entries, ``failurePolicy: Fail`` on both, but each only matches opted-in pods:
  ``pod.inject.aegis.io`` pods labelled ``aegis.io/inject: "true"``;
  ``namespace.inject.aegis.io`` pods in namespaces labelled ``aegis.io/inject:
  enabled`` without a pod label of their own (``"false"`` opts out). A pod matches at
  most one entry, so it is reviewed once per round.
- both exclude ``kube-system`` and the injector's own namespace
  (``kubernetes.io/metadata.name`` is set by the API server on every namespace), so
  the injector can always be (re)started, whatever state the webhook is in;
- with the injector down, opted-in pods are refused (never run without a sidecar),
  every other pod is created as usual: the API server never calls the webhook for
  them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ..api.naming import GROUP, INJECT_LABEL

POD_WEBHOOK = "pod.inject.aegis.io"
NAMESPACE_WEBHOOK = "namespace.inject.aegis.io"
POD_PATH = "/inject/pod"
NAMESPACE_PATH = "/inject/namespace"
TIMEOUT_SECONDS = 5
LABELS = {"app.kubernetes.io/name": "aegis", "app.kubernetes.io/component": "injector"}


def webhook_configuration(
    *,
    name: str = "aegis-injector",
    namespace: str = "aegis-system",
    service_name: str = "aegis-injector",
    service_port: int = 443,
    url: str | None = None,
    ca_bundle: str | None = None,
    protected_namespaces: Sequence[str] = ("kube-system",),
    extra_namespace_expressions: Sequence[Mapping[str, Any]] = (),
    cert_manager_certificate: str | None = None,
    timeout_seconds: int = TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration (``url`` instead of the Service: tests, dev).

    ``cert_manager_certificate`` (``<namespace>/<Certificate>``) adds cert-manager's
    ``inject-ca-from`` annotation; otherwise the injector keeps ``caBundle`` current.
    """
    if not 1 <= timeout_seconds <= 5:
        raise ValueError("admission timeout must be 1..5 s: pod creation must never hang")
    excluded = sorted({*protected_namespaces, namespace})
    never_here = {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": excluded,
    }
    expressions = [never_here, *map(dict, extra_namespace_expressions)]

    def client(path: str) -> dict[str, Any]:
        config: dict[str, Any]
        if url is not None:
            config = {"url": url.rstrip("/") + path}
        else:
            service = {"name": service_name, "namespace": namespace, "path": path}
            config = {"service": {**service, "port": service_port}}
        if ca_bundle:
            config["caBundle"] = ca_bundle
        return config

    common: dict[str, Any] = {
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": "IfNeeded",
        "timeoutSeconds": timeout_seconds,
    }
    by_pod = {
        "name": POD_WEBHOOK,
        "clientConfig": client(POD_PATH),
        "objectSelector": {"matchLabels": {INJECT_LABEL: "true"}},
        "namespaceSelector": {"matchExpressions": expressions},
        **common,
    }
    by_namespace = {
        "name": NAMESPACE_WEBHOOK,
        "clientConfig": client(NAMESPACE_PATH),
        "objectSelector": {
            "matchExpressions": [
                {"key": INJECT_LABEL, "operator": "NotIn", "values": ["true", "false"]}
            ]
        },
        "namespaceSelector": {
            "matchLabels": {INJECT_LABEL: "enabled"},
            "matchExpressions": expressions,
        },
        **common,
    }
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if cert_manager_certificate:
        metadata["annotations"] = {"cert-manager.io/inject-ca-from": cert_manager_certificate}
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [by_pod, by_namespace],
    }
    return copy.deepcopy(config)  # no shared sub-objects (callers may edit; YAML has no aliases)


def rbac(
    *,
    namespace: str = "aegis-system",
    service_account: str = "aegis-injector",
    webhook_config: str | None = "aegis-injector",
    tls_secret: str | None = "aegis-injector-tls",
) -> list[dict[str, Any]]:
    """The injector's least-privilege RBAC: read LLMRoutes, keep its own cert and caBundle.

    No access to pods, namespaces, ConfigMaps or app Secrets: namespace labels are
    matched by the API server, the config hash is in the route's status, and provider
    keys are referenced, never read. ``tls_secret=None`` (cert-manager mode) and
    ``webhook_config=None`` drop the matching rules.
    """
    name = service_account
    meta = {"name": name, "labels": dict(LABELS)}
    cluster_rules: list[dict[str, Any]] = [
        {"apiGroups": [GROUP], "resources": ["llmroutes"], "verbs": ["get", "list", "watch"]}
    ]
    if webhook_config:
        cluster_rules.append(
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["mutatingwebhookconfigurations"],
                "resourceNames": [webhook_config],
                "verbs": ["get", "patch"],
            }
        )
    subject = [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {**meta, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta,
            "rules": cluster_rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": subject,
        },
    ]
    if tls_secret:
        ns_meta = {**meta, "namespace": namespace}
        objects += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": ns_meta,
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["secrets"],
                        "resourceNames": [tls_secret],
                        "verbs": ["get", "update"],
                    },
                    # create cannot be limited to a name; the chart may pre-create the
                    # Secret and drop this rule.
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": ns_meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": subject,
            },
        ]
    return copy.deepcopy(objects)
