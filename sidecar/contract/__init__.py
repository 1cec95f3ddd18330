"""The contract between the operator and the sidecar: the config document.

The operator renders an ``LLMRoute`` (plus the ``LLMBudget`` objects that apply to
it) into exactly this document; a standalone user writes it by hand as YAML. Field
names are camelCase on the wire so that the CRD's ``spec`` and the config share one
vocabulary. Secrets never appear here: a provider names the environment variable
that holds its key (the injector fills it from a Secret with ``secretKeyRef``).

The document has two representations. ``schema/`` holds the pydantic models, the
source of truth: the operator validates with them and the CRD schema and the docs
are generated from them. This package's face is the sidecar's: the runtime types
(``structs.py``, msgspec Structs generated from the schema) and the loader, with no
pydantic in the process. ``behaviour.py`` holds the rules and methods both share.
This package is pure (no I/O library), so the operator can import it too.
"""

from .budget_key import BudgetKey, BudgetScope
from .document import (
    ConfigError,
    LoadedConfig,
    config_of,
    content_hash,
    decode,
    load_config,
    parse_config,
)
from .structs import (
    BudgetSpec,
    CandidatePolicy,
    CircuitBreakerSpec,
    CustomPattern,
    LedgerSpec,
    LimitsSpec,
    ListenSpec,
    ModelPrice,
    Policy,
    PrivacySpec,
    ProviderModels,
    ProviderSpec,
    RateLimitSpec,
    RolloutSpec,
    RouteIdentity,
    Rule,
    RuleMatch,
    SidecarConfig,
    Stickiness,
    Target,
)
from .vocabulary import (
    DEFAULT_BASE_URLS,
    Arm,
    Complexity,
    Locality,
    OnExceeded,
    ProviderType,
    Quality,
    RateUnit,
)

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
    "LedgerSpec",
    "LimitsSpec",
    "ListenSpec",
    "LoadedConfig",
    "Locality",
    "ModelPrice",
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
    "config_of",
    "content_hash",
    "decode",
    "load_config",
    "parse_config",
]
