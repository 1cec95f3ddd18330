"""Routing policy: privacy classes, rules, targets and the rollout candidate."""

from __future__ import annotations

from pydantic import Field

from ..behaviour import CustomPatternMethods, PrivacySpecMethods, RuleMatchMethods
from ..vocabulary import MAX_PATTERN_CHARS, Complexity, Quality
from .base import DataClass, Model, Name
from .providers import ProviderModels


class CustomPattern(CustomPatternMethods, Model):
    """A route's own identifier format: a regular expression and the class it raises."""

    name: Name = Field(description="Names the detector in metrics and the ledger.")
    regex: str = Field(
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="RE2 syntax (no backreferences or look-around), matched in linear "
        "time against normalised text.",
    )
    data_class: DataClass = Field(description="Class a request is raised to when it matches.")


class PrivacySpec(PrivacySpecMethods, Model):
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
    patterns: list[CustomPattern] = Field(
        default_factory=list,
        max_length=32,
        description="Custom detectors: each pattern raises a request to its own class.",
    )
    mask: list[DataClass] = Field(
        default_factory=list,
        max_length=16,
        description="Classes whose detected values are replaced by placeholders before "
        "a cloud call (and restored in the answer) instead of raising the request's class.",
    )


class RuleMatch(RuleMatchMethods, Model):
    """All given fields must match (AND); a list matches any of its values (OR)."""

    data_class: list[DataClass] | None = Field(default=None, min_length=1, max_length=16)
    quality: list[Quality] | None = Field(default=None, min_length=1, max_length=4)
    complexity: list[Complexity] | None = Field(default=None, min_length=1, max_length=3)
    min_batch_size: int | None = Field(default=None, ge=1, le=1_000_000)
    max_batch_size: int | None = Field(default=None, ge=1, le=1_000_000)
    vision: bool | None = Field(default=None, description="Match only (non-)image requests.")


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
