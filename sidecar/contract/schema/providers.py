"""Providers: where a request can go, its models, prices and circuit breaker."""

from __future__ import annotations

from pydantic import Field

from ..behaviour import ProviderModelsMethods, ProviderSpecMethods
from ..vocabulary import Locality, ProviderType
from .base import Model, Money, Name


class ModelPrice(Model):
    """USD per one million tokens."""

    input_per_1m: Money = Field(alias="inputPer1M", description="USD per 1M prompt tokens.")
    output_per_1m: Money = Field(alias="outputPer1M", description="USD per 1M completion tokens.")


class ProviderModels(ProviderModelsMethods, Model):
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


class CircuitBreakerSpec(Model):
    """Skip a provider after repeated failures, probe it again after a pause."""

    failure_threshold: int = Field(default=5, ge=1, le=1000)
    open_seconds: float = Field(default=30.0, gt=0, le=3600)


class ProviderSpec(ProviderSpecMethods, Model):
    """One LLM provider the route may call."""

    name: Name
    type: ProviderType
    base_url: str | None = Field(
        default=None,
        alias="baseURL",
        max_length=2048,
        pattern=r"^https?://",
        description="API base URL; defaults per type (DashScope: international endpoint; "
        "Anthropic: https://api.anthropic.com/v1).",
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
