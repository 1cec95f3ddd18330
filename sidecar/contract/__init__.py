"""The contract between the operator and the sidecar: the config document.

The operator renders an ``LLMRoute`` (plus the ``LLMBudget`` objects that apply to
it) into exactly this document; a standalone user writes it by hand as YAML. Field
names are camelCase on the wire so that the CRD's ``spec`` and these models share
one vocabulary; the CRD schema is generated from them and a test keeps the two in
step. Secrets never appear here: a provider names the environment variable that
holds its key (the injector fills it from a Secret with ``secretKeyRef``).

This package is pure (pydantic and the standard library only), so the operator can
import it without pulling in the sidecar's I/O.
"""

from .base import (
    DEFAULT_BASE_URLS,
    Complexity,
    DataClass,
    Locality,
    Model,
    Money,
    Name,
    OnExceeded,
    ProviderType,
    Quality,
)
from .budget_key import BudgetKey, BudgetScope
from .config import (
    BudgetSpec,
    LedgerSpec,
    LimitsSpec,
    ListenSpec,
    RouteIdentity,
    SidecarConfig,
)
from .document import (
    ConfigError,
    LoadedConfig,
    content_hash,
    format_validation_error,
    load_config,
    parse_config,
)
from .policy import (
    Arm,
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
from .rate_limits import RateLimitSpec, RateUnit

__all__ = [
    "DEFAULT_BASE_URLS",
    "Arm",
    "BudgetKey",
    "BudgetScope",
    "BudgetSpec",
    "CandidatePolicy",
    "CircuitBreakerSpec",
    "Complexity",
    "ConfigError",
    "CustomPattern",
    "DataClass",
    "LedgerSpec",
    "LimitsSpec",
    "ListenSpec",
    "LoadedConfig",
    "Locality",
    "Model",
    "ModelPrice",
    "Money",
    "Name",
    "OnExceeded",
    "Policy",
    "PrivacySpec",
    "ProviderModels",
    "ProviderSpec",
    "ProviderType",
    "Quality",
    "RateLimitSpec",
    "RateUnit",
    "RolloutSpec",
    "RouteIdentity",
    "Rule",
    "RuleMatch",
    "SidecarConfig",
    "Stickiness",
    "Target",
    "content_hash",
    "format_validation_error",
    "load_config",
    "parse_config",
]
