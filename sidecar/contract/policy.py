"""Routing policy: privacy classes, rules, targets and the rollout candidate."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

import re2
from pydantic import (
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .base import Complexity, DataClass, Model, Name, Quality
from .providers import ProviderModels

MAX_PATTERN_CHARS = 512
# RE2's memory budget for one pattern (its default is 8 MiB): enough for any
# sensible identifier pattern, refuses a pattern that would blow up its DFA.
_PATTERN_MEMORY = 1 << 20


class CustomPattern(Model):
    """A route's own identifier format: a regular expression and the class it raises."""

    name: Name = Field(description="Names the detector in metrics and the ledger.")
    regex: str = Field(
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="RE2 syntax (no backreferences or look-around), matched in linear "
        "time against normalised text.",
    )
    data_class: DataClass = Field(description="Class a request is raised to when it matches.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        options = re2.Options()
        options.log_errors = False
        options.max_mem = _PATTERN_MEMORY
        try:
            compiled = re2.compile(value, options)
        except re2.error as exc:
            detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            raise ValueError(f"not a valid RE2 pattern: {detail}") from None
        if "(?P<" in value:
            raise ValueError("named groups are not allowed; use (?:...)")
        if compiled.search("") is not None:
            raise ValueError("the pattern matches the empty string (it would match every request)")
        return value


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

    @model_validator(mode="after")
    def _check_known(self) -> Self:
        known = set(self.classes)
        if len(known) != len(self.classes):
            raise ValueError("privacy.classes must be unique")
        for field in ("local_only", "default_class", "detected_class", "mask"):
            value = getattr(self, field)
            for item in value if isinstance(value, list) else [value]:
                if item not in known:
                    raise ValueError(f"privacy.{to_camel(field)}: unknown class {item!r}")
        names = [p.name for p in self.patterns]
        if len(set(names)) != len(names):
            raise ValueError("privacy.patterns: names must be unique")
        for pattern in self.patterns:
            if pattern.data_class not in known:
                raise ValueError(
                    f"privacy.patterns[{pattern.name}].dataClass: unknown class "
                    f"{pattern.data_class!r}"
                )
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


class Arm(StrEnum):
    """A rollout arm: whose policy routes a request (also a ledger column)."""

    STABLE = "stable"
    CANDIDATE = "candidate"


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
