"""Reconcilers, one per kind: read once, decide in pure code, then apply.

``LLMRoute`` -> its ConfigMap and status (:mod:`.route`, planned by
:mod:`.route_plan`); ``LLMBudget`` -> its status from the ledger (:mod:`.budget`,
planned by :mod:`.budget_plan`); the rollout controller -> the next step from
per-arm ledger figures (:mod:`.rollout`), and manual actions by annotation
(:mod:`.rollout_actions`); each served namespace's ledger role and Secret
(:mod:`.tenants`). :mod:`.lifecycle` runs them for each kopf event.
"""

from . import lifecycle
from .budget import sync_budget
from .budget_plan import applied_budget
from .context import MEMO_KEY, Context, Options, context
from .indices import BudgetIndex, RouteIndex, RouteRef
from .render import AppliedBudget, RenderError, parse_route_spec, render_route
from .route import cleanup_route

__all__ = [
    "MEMO_KEY",
    "AppliedBudget",
    "BudgetIndex",
    "Context",
    "Options",
    "RenderError",
    "RouteIndex",
    "RouteRef",
    "applied_budget",
    "cleanup_route",
    "context",
    "lifecycle",
    "parse_route_spec",
    "render_route",
    "sync_budget",
]
