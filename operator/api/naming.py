"""Names shared by the operator, the injector and the rendered sidecar config.

One place for every name two components must agree on: what the ConfigMap of a
route is called, which key holds the config, which environment variable carries
which Secret value, and the labels and annotations of the opt-in contract.
"""

from __future__ import annotations

import re

GROUP = "aegis.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
ROUTE_KIND = "LLMRoute"
ROUTE_PLURAL = "llmroutes"
BUDGET_KIND = "LLMBudget"
BUDGET_PLURAL = "llmbudgets"
CLUSTER_BUDGET_KIND = "ClusterLLMBudget"
CLUSTER_BUDGET_PLURAL = "clusterllmbudgets"
CATEGORY = "aegis"

CONFIG_KEY = "config.yaml"
"""ConfigMap key holding the rendered sidecar config (the sidecar reads it by name)."""
CONFIG_MOUNT_PATH = "/etc/aegis"
LEDGER_DSN_ENV = "AEGIS_LEDGER_DSN"
"""Env var holding the shared ledger DSN (from a Secret via secretKeyRef): a sidecar's
namespace role; the operator's read-only role."""
LEDGER_CONTROL_DSN_ENV = "AEGIS_LEDGER_CONTROL_DSN"
"""Env var holding the operator's control DSN (budget limits, tenant roles)."""
SPOOL_DIR_ENV = "AEGIS_SPOOL_DIR"
"""Where the sidecar spools ledger rows (``aegis.sidecar.runtime.wiring.SPOOL_ENV``)."""

INJECT_LABEL = "aegis.io/inject"
"""Pod label ``"true"``/``"false"``, or namespace label ``"enabled"``."""
ROUTE_ANNOTATION = "aegis.io/route"
"""Pod annotation naming the LLMRoute to use (else the one whose podSelector matches)."""
CONFIG_HASH_ANNOTATION = "aegis.io/config-hash"
ROLLOUT_ACTION_ANNOTATION = "aegis.io/rollout-action"
"""LLMRoute annotation with a one-shot rollout command: pause, resume, abort, promote or
restart. The operator applies it to ``spec.rollout`` (or the rollout state) and removes it."""
INJECTED_ANNOTATION = "aegis.io/injected-by"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ROUTE_LABEL = "aegis.io/route"
MANAGED_BY = "aegis-operator"
"""Value of ``app.kubernetes.io/managed-by`` on objects the operator renders."""
FINALIZER = "aegis.io/cleanup"
"""On LLMRoute, LLMBudget and ClusterLLMBudget: cleanup is explicit, no garbage collector
is assumed."""
KOPF_PREFIX = "operator.aegis.io"
"""Prefix of kopf's bookkeeping annotations (progress, last-handled configuration)."""


def configmap_name(route: str) -> str:
    """The ConfigMap that holds a route's rendered sidecar config."""
    return f"aegis-route-{route}"


def key_env_var(provider: str) -> str:
    """The env var a provider's API key is injected as (``AEGIS_KEY_<PROVIDER>``)."""
    return "AEGIS_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", provider).upper()
