"""The config document's schema: pydantic models, the one source of truth.

The operator validates what it renders with them and generates the CRD schema and
``docs/sidecar-config.md`` from them; ``generate.py`` writes the sidecar's runtime
types (``structs.py``) from them, so the sidecar validates the same document without
importing pydantic. The rules a field's constraints cannot say live in
``behaviour.py``, shared by both.
"""

from .base import DataClass, Model, Money, Name
from .config import (
    BudgetSpec,
    LedgerSpec,
    LimitsSpec,
    ListenSpec,
    RouteIdentity,
    SidecarConfig,
)
from .policy import (
    CandidatePolicy,
    CustomPattern,
    Policy,
    PrivacySpec,
    RolloutSpec,
    Rule,
    RuleMatch,
    Stickiness,
    Target,
)
from .providers import CircuitBreakerSpec, ModelPrice, ProviderModels, ProviderSpec
from .rate_limits import RateLimitSpec

__all__ = [
    "BudgetSpec",
    "CandidatePolicy",
    "CircuitBreakerSpec",
    "CustomPattern",
    "DataClass",
    "LedgerSpec",
    "LimitsSpec",
    "ListenSpec",
    "Model",
    "ModelPrice",
    "Money",
    "Name",
    "Policy",
    "PrivacySpec",
    "ProviderModels",
    "ProviderSpec",
    "RateLimitSpec",
    "RolloutSpec",
    "RouteIdentity",
    "Rule",
    "RuleMatch",
    "SidecarConfig",
    "Stickiness",
    "Target",
]
