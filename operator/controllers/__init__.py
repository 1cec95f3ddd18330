"""Reconcilers, one per kind: read once, decide in pure code, then apply.

``LLMRoute`` -> its ConfigMap and status (:mod:`.route`, planned by
:mod:`.route_plan`); ``LLMBudget`` -> its limit in the ledger and its status
(:mod:`.budget`, planned by :mod:`.budget_plan`); ``ClusterLLMBudget`` -> its limit
and spending namespaces in the ledger, its status, and the routes of the
namespaces it reaches (:mod:`.cluster_budget`, :mod:`.cluster_scope`); the rollout
controller -> the next step from per-arm ledger figures (:mod:`.rollout`), and
manual actions by annotation (:mod:`.rollout_actions`); each served namespace's
ledger role and Secret (:mod:`.tenants`). :mod:`.lifecycle` runs them for each kopf event.
"""

from . import cluster_budget, lifecycle
from .budget import sync_budget
from .budget_plan import applied_budget
from .cluster_scope import (
    BudgetView,
    ClusterBudgetIndex,
    ClusterBudgetRef,
    Indices,
    NamespaceIndex,
    cluster_ref,
)
from .context import MEMO_KEY, Context, Options, context
from .indices import BudgetIndex, RouteIndex, RouteRef
from .render import AppliedBudget, RenderError, parse_route_spec, render_route
from .route import cleanup_route

__all__ = [
    "MEMO_KEY",
    "AppliedBudget",
    "BudgetIndex",
    "BudgetView",
    "ClusterBudgetIndex",
    "ClusterBudgetRef",
    "Context",
    "Indices",
    "NamespaceIndex",
    "Options",
    "RenderError",
    "RouteIndex",
    "RouteRef",
    "applied_budget",
    "cleanup_route",
    "cluster_budget",
    "cluster_ref",
    "context",
    "lifecycle",
    "parse_route_spec",
    "render_route",
    "sync_budget",
]
