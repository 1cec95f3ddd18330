"""The config document's runtime types: what the sidecar decodes ``config.yaml`` into.

Generated from the schema models (``schema/``) by
``python -m aegis.sidecar.contract.schema.generate``; do not edit. msgspec Structs
instead of the pydantic models keep pydantic out of every sidecar process (about
10 MB of memory per pod); the shared mixins (``behaviour.py``) keep the rules one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta, field

from .behaviour import (
    BudgetSpecMethods,
    Checked,
    CustomPatternMethods,
    ListenSpecMethods,
    PrivacySpecMethods,
    ProviderModelsMethods,
    ProviderSpecMethods,
    RateLimitSpecMethods,
    RuleMatchMethods,
    check_money,
)
from .budget_key import BudgetScope
from .periods import PeriodKind
from .references import SidecarConfigMethods
from .vocabulary import Complexity, Locality, OnExceeded, ProviderType, Quality


class Struct(Checked, msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of the runtime types: checked on construction as the schema checks."""

    # (attribute, wire name) of each money field: Meta cannot bound a Decimal.
    money_fields: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __post_init__(self) -> None:
        for attribute, wire in self.money_fields:
            try:
                check_money(getattr(self, attribute))
            except ValueError as exc:
                raise ValueError(f"{wire}: {exc}") from None
        self.check()


class RuleMatch(RuleMatchMethods, Struct, frozen=True, kw_only=True):
    data_class: (
        Annotated[
            list[Annotated[str, Meta(min_length=1, max_length=32, pattern="^[a-z][a-z0-9_-]*$")]],
            Meta(min_length=1, max_length=16),
        ]
        | None
    ) = field(name="dataClass", default=None)
    quality: Annotated[list[Quality], Meta(min_length=1, max_length=4)] | None = None
    complexity: Annotated[list[Complexity], Meta(min_length=1, max_length=3)] | None = None
    min_batch_size: Annotated[int, Meta(ge=1, le=1000000)] | None = field(
        name="minBatchSize", default=None
    )
    max_batch_size: Annotated[int, Meta(ge=1, le=1000000)] | None = field(
        name="maxBatchSize", default=None
    )
    vision: bool | None = None


class Target(Struct, frozen=True, kw_only=True):
    provider: Annotated[
        str, Meta(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ]
    model: Annotated[str, Meta(max_length=128)] | None = None


class Rule(Struct, frozen=True, kw_only=True):
    name: Annotated[
        str, Meta(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ]
    match: RuleMatch = field(default_factory=RuleMatch)
    to: Target


class Policy(Struct, frozen=True, kw_only=True):
    rules: Annotated[list[Rule], Meta(max_length=64)] = field(default_factory=list)
    default: Target
    fallback: Annotated[
        list[
            Annotated[
                str, Meta(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
            ]
        ],
        Meta(max_length=16),
    ] = field(default_factory=list)


class RouteIdentity(Struct, frozen=True, kw_only=True):
    route: Annotated[str, Meta(max_length=253)] = "standalone"
    namespace: Annotated[str, Meta(max_length=63)] = "default"


class ProviderModels(ProviderModelsMethods, Struct, frozen=True, kw_only=True):
    default: Annotated[str, Meta(min_length=1, max_length=128)]
    vision: Annotated[list[str], Meta(max_length=8)] = field(default_factory=list)
    embedding: Annotated[str, Meta(max_length=128)] | None = None


class ModelPrice(Struct, frozen=True, kw_only=True):
    money_fields: ClassVar[tuple[tuple[str, str], ...]] = (
        ("input_per_1m", "inputPer1M"),
        ("output_per_1m", "outputPer1M"),
    )
    input_per_1m: Decimal = field(name="inputPer1M")
    output_per_1m: Decimal = field(name="outputPer1M")


class CircuitBreakerSpec(Struct, frozen=True, kw_only=True):
    failure_threshold: Annotated[int, Meta(ge=1, le=1000)] = field(
        name="failureThreshold", default=5
    )
    open_seconds: Annotated[float, Meta(gt=0, le=3600)] = field(name="openSeconds", default=30.0)


class ProviderSpec(ProviderSpecMethods, Struct, frozen=True, kw_only=True):
    name: Annotated[
        str, Meta(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ]
    type: ProviderType
    base_url: Annotated[str, Meta(max_length=2048, pattern="^https?://")] | None = field(
        name="baseURL", default=None
    )
    locality: Locality | None = None
    models: ProviderModels
    pricing: Annotated[dict[str, ModelPrice], Meta(max_length=64)] = field(default_factory=dict)
    api_key_env: Annotated[str, Meta(max_length=128, pattern="^[A-Za-z_][A-Za-z0-9_]*$")] | None = (
        field(name="apiKeyEnv", default=None)
    )
    sdk_provider: Annotated[str, Meta(max_length=64)] | None = field(
        name="sdkProvider", default=None
    )
    timeout_seconds: Annotated[float, Meta(gt=0, le=600)] = field(
        name="timeoutSeconds", default=60.0
    )
    connect_timeout_seconds: Annotated[float, Meta(gt=0, le=60)] = field(
        name="connectTimeoutSeconds", default=5.0
    )
    max_retries: Annotated[int, Meta(ge=0, le=5)] = field(name="maxRetries", default=1)
    circuit_breaker: CircuitBreakerSpec = field(
        name="circuitBreaker", default_factory=CircuitBreakerSpec
    )
    default_max_tokens: Annotated[int, Meta(ge=1, le=1000000)] = field(
        name="defaultMaxTokens", default=4096
    )
    vision_high_resolution: bool = field(name="visionHighResolution", default=False)


class CustomPattern(CustomPatternMethods, Struct, frozen=True, kw_only=True):
    name: Annotated[
        str, Meta(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ]
    regex: Annotated[str, Meta(min_length=1, max_length=512)]
    data_class: Annotated[str, Meta(min_length=1, max_length=32, pattern="^[a-z][a-z0-9_-]*$")] = (
        field(name="dataClass")
    )


class PrivacySpec(PrivacySpecMethods, Struct, frozen=True, kw_only=True):
    classes: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=32, pattern="^[a-z][a-z0-9_-]*$")]],
        Meta(min_length=1, max_length=16),
    ] = field(default_factory=lambda: ["public", "internal", "confidential", "pii", "hipaa"])
    local_only: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=32, pattern="^[a-z][a-z0-9_-]*$")]],
        Meta(max_length=16),
    ] = field(name="localOnly", default_factory=lambda: ["pii", "hipaa", "confidential"])
    default_class: Annotated[
        str, Meta(min_length=1, max_length=32, pattern="^[a-z][a-z0-9_-]*$")
    ] = field(name="defaultClass", default="internal")
    detect: bool = True
    detected_class: Annotated[
        str, Meta(min_length=1, max_length=32, pattern="^[a-z][a-z0-9_-]*$")
    ] = field(name="detectedClass", default="pii")
    patterns: Annotated[list[CustomPattern], Meta(max_length=32)] = field(default_factory=list)
    mask: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=32, pattern="^[a-z][a-z0-9_-]*$")]],
        Meta(max_length=16),
    ] = field(default_factory=list)


class CandidatePolicy(Policy, frozen=True, kw_only=True):
    provider_models: Annotated[dict[str, ProviderModels], Meta(max_length=32)] = field(
        name="providerModels", default_factory=dict
    )


class Stickiness(Struct, frozen=True, kw_only=True):
    header: Annotated[str, Meta(max_length=128, pattern="^[A-Za-z0-9-]+$")] = "X-Aegis-User"


class RolloutSpec(Struct, frozen=True, kw_only=True):
    candidate: CandidatePolicy
    weight: Annotated[int, Meta(ge=0, le=100)] = 0
    step: Annotated[int, Meta(ge=0)] = 0
    salt: Annotated[str, Meta(max_length=64)] = ""
    stickiness: Stickiness = field(default_factory=Stickiness)


class RateLimitSpec(RateLimitSpecMethods, Struct, frozen=True, kw_only=True):
    requests_per_minute: Annotated[int, Meta(ge=1, le=10000000)] | None = field(
        name="requestsPerMinute", default=None
    )
    tokens_per_minute: Annotated[int, Meta(ge=1, le=100000000000)] | None = field(
        name="tokensPerMinute", default=None
    )


class BudgetSpec(BudgetSpecMethods, Struct, frozen=True, kw_only=True):
    money_fields: ClassVar[tuple[tuple[str, str], ...]] = (("limit_usd", "limitUSD"),)
    name: Annotated[
        str, Meta(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ]
    provider: (
        Annotated[str, Meta(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
        | None
    ) = None
    providers: Annotated[
        list[
            Annotated[
                str, Meta(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
            ]
        ],
        Meta(max_length=32),
    ] = field(default_factory=list)
    models: Annotated[
        list[
            Annotated[
                str, Meta(min_length=1, max_length=128, pattern="^[A-Za-z0-9._:/@*?\\[\\]!-]+$")
            ]
        ],
        Meta(max_length=32),
    ] = field(default_factory=list)
    data_classes: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=32, pattern="^[a-z][a-z0-9_-]*$")]],
        Meta(max_length=16),
    ] = field(name="dataClasses", default_factory=list)
    service_accounts: Annotated[
        list[
            Annotated[
                str,
                Meta(
                    min_length=1,
                    max_length=253,
                    pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                ),
            ]
        ],
        Meta(max_length=64),
    ] = field(name="serviceAccounts", default_factory=list)
    limit_usd: Decimal = field(name="limitUSD")
    period: PeriodKind = PeriodKind.MONTHLY
    timezone: Annotated[str, Meta(max_length=64)] = "UTC"
    on_exceeded: OnExceeded = field(name="onExceeded", default=OnExceeded.FALLBACK_LOCAL)
    alert_thresholds: Annotated[list[Annotated[int, Meta(ge=1, le=100)]], Meta(max_length=10)] = (
        field(name="alertThresholds", default_factory=lambda: [80, 90, 100])
    )
    scope: BudgetScope = BudgetScope.NAMESPACE
    namespace: (
        Annotated[str, Meta(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
        | None
    ) = None
    rate_limits: RateLimitSpec | None = field(name="rateLimits", default=None)


class LedgerSpec(Struct, frozen=True, kw_only=True):
    url: Annotated[str, Meta(max_length=2048)] = "sqlite+aiosqlite:///aegis-ledger.db"
    url_env: Annotated[str, Meta(max_length=128, pattern="^[A-Za-z_][A-Za-z0-9_]*$")] | None = (
        field(name="urlEnv", default=None)
    )


class LimitsSpec(Struct, frozen=True, kw_only=True):
    max_header_bytes: Annotated[int, Meta(ge=4096, le=1048576)] = field(
        name="maxHeaderBytes", default=32768
    )
    max_json_depth: Annotated[int, Meta(ge=8, le=512)] = field(name="maxJsonDepth", default=64)
    max_messages: Annotated[int, Meta(ge=1, le=100000)] = field(name="maxMessages", default=2048)
    max_tools: Annotated[int, Meta(ge=1, le=10000)] = field(name="maxTools", default=256)
    max_content_parts: Annotated[int, Meta(ge=1, le=100000)] = field(
        name="maxContentParts", default=512
    )
    max_concurrent_requests: Annotated[int, Meta(ge=0, le=100000)] = field(
        name="maxConcurrentRequests", default=256
    )
    request_timeout_seconds: Annotated[float, Meta(gt=0, le=86400)] = field(
        name="requestTimeoutSeconds", default=600.0
    )
    client_timeout_seconds: Annotated[float, Meta(gt=0, le=3600)] = field(
        name="clientTimeoutSeconds", default=60.0
    )
    max_upstream_event_bytes: Annotated[int, Meta(ge=65536, le=268435456)] = field(
        name="maxUpstreamEventBytes", default=4194304
    )
    max_upstream_body_bytes: Annotated[int, Meta(ge=65536, le=1073741824)] = field(
        name="maxUpstreamBodyBytes", default=67108864
    )


class ListenSpec(ListenSpecMethods, Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8787
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] = field(name="metricsPort", default=9787)
    metrics_host: str = field(name="metricsHost", default="127.0.0.1")
    max_body_bytes: Annotated[int, Meta(ge=1024, le=268435456)] = field(
        name="maxBodyBytes", default=20971520
    )
    limits: LimitsSpec = field(default_factory=LimitsSpec)


class SidecarConfig(SidecarConfigMethods, Policy, frozen=True, kw_only=True):
    api_version: Literal["aegis.io/v1alpha1"] = field(
        name="apiVersion", default="aegis.io/v1alpha1"
    )
    kind: Literal["SidecarConfig"] = "SidecarConfig"
    identity: RouteIdentity = field(default_factory=RouteIdentity)
    providers: Annotated[list[ProviderSpec], Meta(min_length=1, max_length=32)]
    privacy: PrivacySpec = field(default_factory=PrivacySpec)
    rollout: RolloutSpec | None = None
    budgets: Annotated[list[BudgetSpec], Meta(max_length=64)] = field(default_factory=list)
    rate_limits: RateLimitSpec | None = field(name="rateLimits", default=None)
    ledger: LedgerSpec = field(default_factory=LedgerSpec)
    listen: ListenSpec = field(default_factory=ListenSpec)
