"""The shared vocabulary of the config: the base model, names, money and enums."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
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


DEFAULT_BASE_URLS: dict[ProviderType, str] = {
    ProviderType.OPENAI: "https://api.openai.com/v1",
    ProviderType.DASHSCOPE: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    ProviderType.OLLAMA: "http://127.0.0.1:11434",
    ProviderType.ANTHROPIC: "https://api.anthropic.com/v1",
}
