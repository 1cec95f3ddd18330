"""The router: request facts + config + budget and health views -> a decision.

Pure: no I/O, no clock, no randomness (the caller passes the random number). The
stateful parts it consults (budgets, circuit breakers) come in through the small
read-only ports in :mod:`.ports`; a refusal is a value of the sidecar's error
family (:mod:`aegis.sidecar.errors`) inside the decision, built in
:mod:`.refusals` (also by the exchange, when a reservation fails).
"""

from .arms import choose_arm
from .catalog import AUTO_MODELS, model_catalog, resolve_model
from .ports import (
    BUDGET_EXCEEDED,
    BUDGET_UNAVAILABLE,
    AllHealthy,
    BudgetVerdict,
    BudgetView,
    HealthView,
    StaticBudgetView,
    StaticHealth,
    UnlimitedBudget,
)
from .refusals import budget_refusal
from .router import (
    REASON_BUDGET,
    REASON_CIRCUIT_OPEN,
    REASON_FALLBACK,
    REASON_PRIVACY,
    REASON_TARGET,
    Candidate,
    RouteDecision,
    models_for,
    route,
    rule_matches,
)

__all__ = [
    "AUTO_MODELS",
    "BUDGET_EXCEEDED",
    "BUDGET_UNAVAILABLE",
    "REASON_BUDGET",
    "REASON_CIRCUIT_OPEN",
    "REASON_FALLBACK",
    "REASON_PRIVACY",
    "REASON_TARGET",
    "AllHealthy",
    "BudgetVerdict",
    "BudgetView",
    "Candidate",
    "HealthView",
    "RouteDecision",
    "StaticBudgetView",
    "StaticHealth",
    "UnlimitedBudget",
    "budget_refusal",
    "choose_arm",
    "model_catalog",
    "models_for",
    "resolve_model",
    "route",
    "rule_matches",
]
