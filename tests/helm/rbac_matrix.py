"""What the chart's RBAC must allow, for the install tests: the ledger Secret rules the
operator gets in the namespaces it serves, and the `kubectl auth can-i` spot checks run
as the operator's and the injector's ServiceAccounts."""

from __future__ import annotations

TENANT_RULES = [
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["aegis-ledger"],
     "verbs": ["get", "update"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
]  # fmt: skip

# (verb, resource[/name], subresource, namespace: REL, APP, SYS or None for cluster-wide,
# allowed); the chart's default: the operator bound in the namespaces it serves only.
Check = tuple[str, str, str, str | None, bool]
OPERATOR_MATRIX: list[Check] = [
    ("watch", "llmroutes.aegis.io", "", "APP", True),
    ("watch", "llmroutes.aegis.io", "", None, False),
    ("watch", "llmroutes.aegis.io", "", "SYS", False),
    ("watch", "clusterllmbudgets.aegis.io", "", None, True),
    ("patch", "clusterllmbudgets.aegis.io", "status", None, True),
    ("create", "clusterllmbudgets.aegis.io", "", None, False),
    ("delete", "clusterllmbudgets.aegis.io", "", None, False),
    ("watch", "namespaces", "", None, True),
    ("patch", "namespaces", "", None, False),
    ("patch", "llmbudgets.aegis.io", "status", "APP", True),
    ("update", "llmroutes.aegis.io", "finalizers", "APP", True),
    ("create", "configmaps", "", "APP", True),
    ("create", "configmaps", "", "SYS", False),
    ("get", "secrets", "", "APP", False),
    ("get", "secrets/aegis-ledger", "", "APP", True),
    ("update", "secrets/aegis-ledger", "", "APP", True),
    ("get", "secrets/aegis-ledger", "", "SYS", False),
    ("delete", "secrets/aegis-ledger", "", "APP", False),
    ("create", "events.events.k8s.io", "", "APP", True),
    ("list", "secrets", "", "APP", False),
    ("watch", "secrets", "", None, False),
    ("list", "configmaps", "", "APP", False),
    ("update", "configmaps", "", "APP", False),
    ("create", "llmroutes.aegis.io", "", "APP", False),
    ("delete", "llmroutes.aegis.io", "", "APP", False),
    ("update", "llmroutes.aegis.io", "", "APP", False),
    ("create", "pods", "", "APP", False),
    ("list", "pods", "", None, False),
    ("get", "namespaces", "", None, False),
    ("get", "customresourcedefinitions.apiextensions.k8s.io", "", None, False),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", None, False),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", None, False),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", "", None, False),
    ("impersonate", "serviceaccounts", "", "REL", False),
    ("create", "serviceaccounts", "token", "REL", False),
]
INJECTOR_MATRIX: list[Check] = [
    ("list", "llmroutes.aegis.io", "", None, True),
    ("watch", "llmroutes.aegis.io", "", None, True),
    ("get", "mutatingwebhookconfigurations.admissionregistration.k8s.io/WEBHOOK", "", None, True),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/WEBHOOK", "", None,
     True),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/other", "", None,
     False),
    ("list", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", None, False),
    ("delete", "mutatingwebhookconfigurations.admissionregistration.k8s.io/WEBHOOK", "", None,
     False),
    ("update", "secrets/TLS", "", "REL", True),
    ("create", "secrets", "", "REL", True),
    ("get", "secrets/ledger", "", "REL", False),
    ("list", "secrets", "", "REL", False),
    ("get", "secrets/TLS", "", "APP", False),
    ("create", "secrets", "", "APP", False),
    ("patch", "llmroutes.aegis.io", "", "APP", False),
    ("patch", "llmroutes.aegis.io", "status", "APP", False),
    ("get", "configmaps", "", "APP", False),
    ("list", "pods", "", None, False),
    ("create", "pods", "", "APP", False),
    ("get", "namespaces", "", None, False),
]  # fmt: skip
