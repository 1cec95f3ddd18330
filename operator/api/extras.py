"""CRD-only schema material: CEL helpers, and what the sidecar's models cannot say.

The sidecar's config models are reused unchanged in the CRDs (one source of
truth), but they cannot carry Kubernetes keywords or, in a few places, the
descriptions ``kubectl explain`` should show. What they lack is added here,
keyed by model class, and applied wherever the class appears in a CRD by
:mod:`aegis.operator.api.schema`. A test keeps :data:`DESCRIPTIONS` honest (every
entry names a real field); its texts can move into ``aegis.sidecar.contract``
at any time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from aegis.sidecar.contract.schema import (
    BudgetSpec,
    CircuitBreakerSpec,
    ModelPrice,
    Policy,
    ProviderModels,
    ProviderSpec,
    Rule,
    RuleMatch,
    Stickiness,
    Target,
)

from .zones import ZONES

SchemaExtra = Callable[[dict[str, Any]], None]


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
#: A glob whose every ``[`` has a ``]`` after at least one character (fnmatch would
#: read an unclosed one as a plain ``[``: almost surely a typo). In a CEL string.
_CLOSED_BRACKETS = r"^[^\\[]*(\\[!?[^\\]]+\\][^\\[]*)*$"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry; ``field_path`` sharpens the error's path."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def extra(
    *rules: dict[str, str], drop: tuple[str, ...] = (), also: SchemaExtra | None = None
) -> SchemaExtra:
    """A ``json_schema_extra`` adding CEL rules and dropping properties the CRD does not
    expose (the operator renders them instead)."""

    def apply(schema: dict[str, Any]) -> None:
        for name in drop:
            schema.get("properties", {}).pop(name, None)
            if name in schema.get("required", []):
                schema["required"].remove(name)
        if rules:
            schema.setdefault("x-kubernetes-validations", []).extend(rules)
        if also is not None:
            also(schema)

    return apply


def unique(path: str) -> str:
    return f"!has(self.{path}) || self.{path}.all(x, self.{path}.exists_one(y, y == x))"


def cel_list(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


# -- schema additions for the sidecar's own models -----------------------------------

#: Extra schema for sidecar models reused as they are (they cannot carry CRD-only
#: keywords themselves). Keyed by class; applied wherever the class appears.
SIDECAR_SCHEMA_EXTRAS: dict[type[BaseModel], SchemaExtra] = {
    RuleMatch: extra(
        cel(
            "!has(self.minBatchSize) || !has(self.maxBatchSize) || "
            "self.minBatchSize <= self.maxBatchSize",
            "minBatchSize must not exceed maxBatchSize",
            ".minBatchSize",
        )
    ),
    BudgetSpec: extra(
        cel(
            "!has(self.provider) || !has(self.providers) || size(self.providers) == 0",
            "set provider or providers, not both",
            ".providers",
        ),
        cel(
            f"!has(self.models) || self.models.all(g, g.matches('{_CLOSED_BRACKETS}'))",
            "every models glob must close each [ with ] around at least one character "
            "(e.g. gpt-4[o1]*)",
            ".models",
        ),
        cel(
            f"!has(self.timezone) || self.timezone in {cel_list(list(ZONES))}",
            "timezone must be an IANA time zone name such as UTC, Europe/Berlin or "
            "America/New_York",
            ".timezone",
        ),
    ),
    ProviderModels: extra(
        cel(unique("vision"), "vision models must be unique", ".vision"),
        also=lambda schema: schema["properties"]["vision"]["items"].update(maxLength=128),
    ),
}

#: Descriptions for sidecar fields that have none (or only their type's generic one).
#: Keyed by the class that declares the field and its camelCase name. A test keeps
#: this list honest; these texts can move into ``aegis.sidecar.contract`` any time.
DESCRIPTIONS: dict[type[BaseModel], dict[str, str]] = {
    ProviderSpec: {
        "name": "Provider name, unique in the route; rules, fallback and LLMBudgets refer to it.",
        "type": "Wire protocol: openai, dashscope (compatible mode), ollama, "
        "openai-compatible (any OpenAI-wire server), anthropic (the Messages API) or "
        "any-llm (other SDK providers).",
        "models": "The model names this provider serves to the route.",
        "timeoutSeconds": "Seconds to wait for a whole upstream answer.",
        "connectTimeoutSeconds": "Seconds to wait for the upstream connection.",
        "circuitBreaker": "Skip the provider after repeated failures, probe it again later.",
    },
    CircuitBreakerSpec: {
        "failureThreshold": "Consecutive failures that open the breaker.",
        "openSeconds": "Seconds the breaker stays open before one probe request.",
    },
    ModelPrice: {},
    RuleMatch: {
        "dataClass": "Data classes to match (the request's class after PII detection).",
        "quality": "X-Aegis-Quality values to match: low, standard, high, critical.",
        "complexity": "X-Aegis-Complexity values to match: low, medium, high.",
        "minBatchSize": "Match requests whose X-Aegis-Batch-Size is at least this.",
        "maxBatchSize": "Match requests whose X-Aegis-Batch-Size is at most this.",
    },
    Rule: {
        "name": "Rule name, unique in its policy; recorded on every ledger row.",
        "match": "Conditions, all of which must hold; empty matches every request.",
        "to": "Where a matching request goes.",
    },
    Target: {"provider": "Name of a provider in spec.providers."},
    Policy: {
        "rules": "Routing rules, tried in order: the first whose match holds picks the target.",
        "default": "Where requests go that match no rule.",
        "fallback": "Provider names tried in order after the target fails, minus those the "
        "data class or budget forbids.",
    },
    Stickiness: {},
    BudgetSpec: {
        "limitUSD": "USD per period (0 blocks the calls the budget applies to).",
        "alertThresholds": "Utilisation percentages (1-100) that raise a Warning condition "
        "and one event each per period.",
    },
}
