"""The config's closed vocabularies (enums) and built-in defaults, shared by the
schema models and the sidecar's runtime types."""

from __future__ import annotations

from enum import StrEnum


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
    ANTHROPIC = "anthropic"
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
    """What a request gets when a budget that applies to it cannot cover it:
    ``FallbackLocal`` (a local provider answers, else the refusal), ``Reject`` (the
    refusal), ``Notify`` (the call goes ahead; it is counted and the budget's status
    says it is exceeded)."""

    FALLBACK_LOCAL = "FallbackLocal"
    REJECT = "Reject"
    NOTIFY = "Notify"


class Arm(StrEnum):
    """A rollout arm: whose policy routes a request (also a ledger column)."""

    STABLE = "stable"
    CANDIDATE = "candidate"


class RateUnit(StrEnum):
    """What a rate limit counts."""

    REQUESTS = "requests"
    TOKENS = "tokens"


MAX_REQUESTS_PER_MINUTE = 10_000_000
MAX_TOKENS_PER_MINUTE = 100_000_000_000
MAX_PATTERN_CHARS = 512

DEFAULT_BASE_URLS: dict[ProviderType, str] = {
    ProviderType.OPENAI: "https://api.openai.com/v1",
    ProviderType.DASHSCOPE: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    ProviderType.OLLAMA: "http://127.0.0.1:11434",
    ProviderType.ANTHROPIC: "https://api.anthropic.com/v1",
}
