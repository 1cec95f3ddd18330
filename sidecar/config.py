"""The sidecar configuration: the contract between the operator and the sidecar.

The operator renders an ``LLMRoute`` (plus the ``LLMBudget`` objects that apply to
it) into exactly this document; a standalone user writes it by hand as YAML. Field
names are camelCase on the wire so that the CRD's ``spec`` and this model share one
vocabulary; the CRD schema is checked against these models by a test.

Secrets never appear here: a provider names the environment variable that holds
its key (the injector fills it from a Secret with ``secretKeyRef``).
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="A DNS-label style name: lower case letters, digits and '-'.",
    ),
]
DataClass = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="A data classification label such as public, internal, pii or hipaa.",
    ),
]
Money = Annotated[Decimal, Field(ge=Decimal(0), max_digits=18, decimal_places=6)]


class Model(BaseModel):
    """Base for every config model: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class Locality(StrEnum):
    """Where a provider runs; data of local-only classes may only go to ``local``."""

    LOCAL = "local"
    CLOUD = "cloud"


class ProviderType(StrEnum):
    """The wire protocol (or SDK) used to reach a provider."""

    OPENAI = "openai"
    DASHSCOPE = "dashscope"
    OLLAMA = "ollama"
    OPENAI_COMPATIBLE = "openai-compatible"
    ANY_LLM = "any-llm"


class Quality(StrEnum):
    LOW = "low"
    STANDARD = "standard"
    HIGH = "high"
    CRITICAL = "critical"


class Complexity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class OnExceeded(StrEnum):
    """What a request gets when its provider's budget cannot cover it."""

    FALLBACK_LOCAL = "FallbackLocal"
    REJECT = "Reject"


DEFAULT_BASE_URLS: dict[ProviderType, str] = {
    ProviderType.OPENAI: "https://api.openai.com/v1",
    ProviderType.DASHSCOPE: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    ProviderType.OLLAMA: "http://127.0.0.1:11434",
}


class ModelPrice(Model):
    """USD per one million tokens."""

    input_per_1m: Money = Field(alias="inputPer1M", description="USD per 1M prompt tokens.")
    output_per_1m: Money = Field(alias="outputPer1M", description="USD per 1M completion tokens.")


class ProviderModels(Model):
    """The concrete model names a provider serves to this route."""

    default: str = Field(min_length=1, max_length=128, description="Model for chat requests.")
    vision: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Models for requests with image input, tried in order "
        "(e.g. an instruct model, then a thinking model).",
    )
    embedding: str | None = Field(
        default=None, max_length=128, description="Model for /v1/embeddings."
    )

    @field_validator("vision", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("vision")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("vision models must be unique")
        return value


class CircuitBreakerSpec(Model):
    """Skip a provider after repeated failures, probe it again after a pause."""

    failure_threshold: int = Field(default=5, ge=1, le=1000)
    open_seconds: float = Field(default=30.0, gt=0, le=3600)


class ProviderSpec(Model):
    """One LLM provider the route may call."""

    name: Name
    type: ProviderType
    base_url: str | None = Field(
        default=None,
        alias="baseURL",
        validation_alias=AliasChoices("baseURL", "baseUrl", "base_url"),
        max_length=2048,
        pattern=r"^https?://",
        description="API base URL; defaults per type (DashScope: international endpoint).",
    )
    locality: Locality | None = Field(
        default=None,
        description="local or cloud; defaults to local for ollama and cloud otherwise.",
    )
    models: ProviderModels
    pricing: dict[str, ModelPrice] = Field(
        default_factory=dict,
        max_length=64,
        description="Prices by model name; overrides the built-in price table.",
    )
    api_key_env: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the API key (never the key itself).",
    )
    sdk_provider: str | None = Field(
        default=None,
        alias="sdkProvider",
        max_length=64,
        description="any-llm provider name (e.g. anthropic, mistral); only for type any-llm.",
    )
    timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    max_retries: int = Field(
        default=1, ge=0, le=5, description="Retries on 429/5xx/connection errors."
    )
    circuit_breaker: CircuitBreakerSpec = Field(default_factory=CircuitBreakerSpec)
    default_max_tokens: int = Field(
        default=4096,
        ge=1,
        le=1_000_000,
        description="Completion cap used for the worst-case budget reservation when a "
        "request sets none; it is sent upstream so the reservation is a true bound.",
    )
    vision_high_resolution: bool = Field(
        default=False, description="DashScope: send vl_high_resolution_images=true."
    )

    @model_validator(mode="after")
    def _check_type_fields(self) -> Self:
        if self.type is ProviderType.ANY_LLM and not self.sdk_provider:
            raise ValueError("sdkProvider is required when type is any-llm")
        if self.type is not ProviderType.ANY_LLM and self.sdk_provider:
            raise ValueError("sdkProvider is only allowed when type is any-llm")
        if self.base_url is None and self.type is ProviderType.OPENAI_COMPATIBLE:
            # any-llm providers know their own endpoints; a generic OpenAI-wire server does not.
            raise ValueError("baseURL is required for provider type openai-compatible")
        return self

    @property
    def resolved_base_url(self) -> str | None:
        """The base URL to call (any-llm may use its own default)."""
        return self.base_url or DEFAULT_BASE_URLS.get(self.type)

    @property
    def resolved_locality(self) -> Locality:
        if self.locality is not None:
            return self.locality
        return Locality.LOCAL if self.type is ProviderType.OLLAMA else Locality.CLOUD

    @property
    def is_local(self) -> bool:
        return self.resolved_locality is Locality.LOCAL


class PrivacySpec(Model):
    """Which data classes must stay on local providers, and PII detection."""

    classes: list[DataClass] = Field(
        default_factory=lambda: ["public", "internal", "confidential", "pii", "hipaa"],
        min_length=1,
        max_length=16,
        description="Known data classes, least strict first; detection only moves up.",
    )
    local_only: list[DataClass] = Field(
        default_factory=lambda: ["pii", "hipaa", "confidential"],
        max_length=16,
        description="Classes that never leave local providers.",
    )
    default_class: DataClass = Field(
        default="internal", description="Class of a request that sends no header."
    )
    detect: bool = Field(default=True, description="Scan prompts for PII patterns.")
    detected_class: DataClass = Field(
        default="pii", description="Class assigned when detection finds PII."
    )

    @model_validator(mode="after")
    def _check_known(self) -> Self:
        known = set(self.classes)
        if len(known) != len(self.classes):
            raise ValueError("privacy.classes must be unique")
        for field in ("local_only", "default_class", "detected_class"):
            value = getattr(self, field)
            for item in value if isinstance(value, list) else [value]:
                if item not in known:
                    raise ValueError(f"privacy.{to_camel(field)}: unknown class {item!r}")
        return self

    def rank(self, data_class: str) -> int:
        """Strictness of a class (higher is stricter)."""
        return self.classes.index(data_class)


class RuleMatch(Model):
    """All given fields must match (AND); a list matches any of its values (OR)."""

    data_class: list[DataClass] | None = Field(default=None, min_length=1, max_length=16)
    quality: list[Quality] | None = Field(default=None, min_length=1, max_length=4)
    complexity: list[Complexity] | None = Field(default=None, min_length=1, max_length=3)
    min_batch_size: int | None = Field(default=None, ge=1, le=1_000_000)
    max_batch_size: int | None = Field(default=None, ge=1, le=1_000_000)
    vision: bool | None = Field(default=None, description="Match only (non-)image requests.")

    @model_validator(mode="after")
    def _check_batch_range(self) -> Self:
        low, high = self.min_batch_size, self.max_batch_size
        if low is not None and high is not None and low > high:
            raise ValueError(f"minBatchSize ({low}) must not exceed maxBatchSize ({high})")
        return self


class Target(Model):
    """Where a matched request goes: a provider and optionally a model."""

    provider: Name
    model: str | None = Field(
        default=None, max_length=128, description="Defaults to the provider's default model."
    )


class Rule(Model):
    name: Name
    match: RuleMatch = Field(default_factory=RuleMatch)
    to: Target


class Policy(Model):
    """A routing policy: ordered rules, a default and a fallback chain."""

    rules: list[Rule] = Field(default_factory=list, max_length=64, description="First match wins.")
    default: Target
    fallback: list[Name] = Field(
        default_factory=list,
        max_length=16,
        description="Providers tried after the target, filtered by privacy and budget.",
    )


class Stickiness(Model):
    header: str = Field(
        default="X-Aegis-User",
        max_length=128,
        pattern=r"^[A-Za-z0-9-]+$",
        description="Request header whose value keeps a user on one arm.",
    )


class CandidatePolicy(Policy):
    """A rollout's candidate: a policy, plus the models providers serve to it.

    ``providerModels`` lets a candidate try other models of the same providers (a
    new default or vision model) without a second provider entry: budgets,
    circuit breakers and ledger rows stay keyed by the provider's name, and only
    requests of the candidate arm see the replacement models."""

    provider_models: dict[str, ProviderModels] = Field(
        default_factory=dict,
        max_length=32,
        description="Models a provider serves to candidate requests, by provider name; "
        "replaces that provider's models for the candidate arm only.",
    )


class RolloutSpec(Model):
    """The candidate policy and the share of traffic it receives right now."""

    candidate: CandidatePolicy
    weight: int = Field(default=0, ge=0, le=100, description="Percent of traffic to candidate.")
    step: int = Field(default=0, ge=0, description="Index of the current step (for status).")
    salt: str = Field(
        default="",
        max_length=64,
        description="Stickiness salt, fixed for one candidate (the operator uses the "
        "candidate's hash): raising the weight only moves users to the candidate, and a "
        "new candidate starts with a different set of users.",
    )
    stickiness: Stickiness = Field(default_factory=Stickiness)


class BudgetSpec(Model):
    """A calendar-month USD limit for one provider, as rendered from an LLMBudget."""

    name: Name
    provider: Name
    limit_usd: Money = Field(alias="limitUSD")
    period: Literal["Monthly"] = "Monthly"
    timezone: str = Field(
        default="UTC", max_length=64, description="IANA zone whose calendar months are periods."
    )
    on_exceeded: OnExceeded = OnExceeded.FALLBACK_LOCAL
    alert_thresholds: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [80, 90, 100], max_length=10
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class LedgerSpec(Model):
    url: str = Field(
        default="sqlite+aiosqlite:///aegis-ledger.db",
        max_length=2048,
        description="SQLAlchemy async URL; ignored when urlEnv is set in the environment.",
    )
    url_env: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the ledger DSN (from a Secret).",
    )


class ListenSpec(Model):
    host: str = Field(default="127.0.0.1", description="Loopback address only.")
    port: int = Field(default=8787, ge=1, le=65535)
    metrics_port: int = Field(default=9787, ge=0, le=65535, description="0 disables.")
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address of the metrics listener (read-only, no request data); in a "
        "pod the injector sets 0.0.0.0 so Prometheus can scrape it.",
    )
    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)

    @field_validator("metrics_host")
    @classmethod
    def _an_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"metricsHost must be an IP address, not {value!r}") from None
        return value

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        try:
            loopback = ipaddress.ip_address(value).is_loopback
        except ValueError:
            loopback = value == "localhost"
        if not loopback:
            raise ValueError("the sidecar listens on a loopback address only")
        return value


class RouteIdentity(Model):
    """Who this config belongs to; recorded on every ledger row."""

    route: str = Field(default="standalone", max_length=253)
    namespace: str = Field(default="default", max_length=63)


class SidecarConfig(Policy):
    """The whole sidecar configuration (one route plus its budgets)."""

    api_version: Literal["aegis.io/v1alpha1"] = "aegis.io/v1alpha1"
    kind: Literal["SidecarConfig"] = "SidecarConfig"
    identity: RouteIdentity = Field(default_factory=RouteIdentity)
    providers: list[ProviderSpec] = Field(min_length=1, max_length=32)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    rollout: RolloutSpec | None = None
    budgets: list[BudgetSpec] = Field(default_factory=list, max_length=64)
    ledger: LedgerSpec = Field(default_factory=LedgerSpec)
    listen: ListenSpec = Field(default_factory=ListenSpec)

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ValueError("providers: names must be unique")
        known = set(names)
        policies: list[tuple[str, Policy]] = [("", self)]
        if self.rollout is not None:
            policies.append(("rollout.candidate.", self.rollout.candidate))
        for prefix, policy in policies:
            rule_names = [r.name for r in policy.rules]
            if len(set(rule_names)) != len(rule_names):
                raise ValueError(f"{prefix}rules: names must be unique")
            for i, rule in enumerate(policy.rules):
                if rule.to.provider not in known:
                    raise ValueError(
                        f"{prefix}rules[{i}].to.provider: unknown provider {rule.to.provider!r}"
                    )
            if policy.default.provider not in known:
                raise ValueError(
                    f"{prefix}default.provider: unknown provider {policy.default.provider!r}"
                )
            for j, name in enumerate(policy.fallback):
                if name not in known:
                    raise ValueError(f"{prefix}fallback[{j}]: unknown provider {name!r}")
        if self.rollout is not None:
            for name in self.rollout.candidate.provider_models:
                if name not in known:
                    raise ValueError(
                        f"rollout.candidate.providerModels.{name}: unknown provider {name!r}"
                    )
        zones: dict[str, str] = {}
        budget_names: set[str] = set()
        for k, budget in enumerate(self.budgets):
            if budget.provider not in known:
                raise ValueError(f"budgets[{k}].provider: unknown provider {budget.provider!r}")
            if budget.name in budget_names:
                raise ValueError(f"budgets[{k}].name: duplicate budget name {budget.name!r}")
            budget_names.add(budget.name)
            # One ledger row carries one period, so a provider's budgets share a zone.
            zone = zones.setdefault(budget.provider, budget.timezone)
            if zone != budget.timezone:
                raise ValueError(
                    f"budgets[{k}].timezone: budgets of provider {budget.provider!r} must "
                    f"share one time zone ({zone!r} vs {budget.timezone!r})"
                )
        if self.privacy.local_only and not any(p.is_local for p in self.providers):
            raise ValueError("privacy.localOnly is set but no provider has locality local")
        return self

    def provider(self, name: str) -> ProviderSpec:
        for spec in self.providers:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def budgets_for(self, provider: str) -> list[BudgetSpec]:
        return [b for b in self.budgets if b.provider == provider]
