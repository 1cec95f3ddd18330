"""The whole document's rules: every provider a rule, a default, a fallback, a
rollout candidate or a budget names exists; names and budget keys are unique.

A mixin of both representations, like those of ``behaviour.py``; it reads the
document's parts through the protocols below, which both satisfy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, cast

from .behaviour import Checked, check_unique
from .budget_key import BudgetKey


class _ProviderFacts(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def is_local(self) -> bool: ...


class _TargetFacts(Protocol):
    @property
    def provider(self) -> str: ...


class _RuleFacts(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def to(self) -> _TargetFacts: ...


class _PolicyFacts(Protocol):
    @property
    def rules(self) -> Sequence[_RuleFacts]: ...
    @property
    def default(self) -> _TargetFacts: ...
    @property
    def fallback(self) -> Sequence[str]: ...


class _CandidateFacts(_PolicyFacts, Protocol):
    @property
    def provider_models(self) -> Mapping[str, object]: ...


class _RolloutFacts(Protocol):
    @property
    def candidate(self) -> _CandidateFacts: ...


class _BudgetFacts(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def provider(self) -> str | None: ...
    @property
    def provider_names(self) -> tuple[str, ...]: ...
    def key(self, default_namespace: str = "") -> BudgetKey: ...
    def applies(self, provider: str, *, local: bool = False) -> bool: ...


class _IdentityFacts(Protocol):
    @property
    def namespace(self) -> str: ...


class _LocalOnlyFacts(Protocol):
    @property
    def local_only(self) -> Sequence[str]: ...


class SidecarConfigMethods(Checked):
    """The whole document's rules: every provider a rule, a default, a fallback, a
    candidate or a budget names exists, and names and budget keys are unique."""

    __slots__ = ()
    if TYPE_CHECKING:

        @property
        def providers(self) -> Sequence[_ProviderFacts]: ...
        @property
        def rollout(self) -> _RolloutFacts | None: ...
        @property
        def budgets(self) -> Sequence[_BudgetFacts]: ...
        @property
        def identity(self) -> _IdentityFacts: ...
        @property
        def privacy(self) -> _LocalOnlyFacts: ...

    def check(self) -> None:
        names = [p.name for p in self.providers]
        check_unique("providers", names, "names")
        known = set(names)
        # The document is itself the stable policy (it extends Policy).
        policies: list[tuple[str, _PolicyFacts]] = [("", cast(_PolicyFacts, self))]
        if self.rollout is not None:
            policies.append(("rollout.candidate.", self.rollout.candidate))
        for prefix, policy in policies:
            _check_policy(prefix, policy, known)
        if self.rollout is not None:
            for name in self.rollout.candidate.provider_models:
                if name not in known:
                    raise ValueError(
                        f"rollout.candidate.providerModels.{name}: unknown provider {name!r}"
                    )
        budget_keys: set[BudgetKey] = set()
        for k, budget in enumerate(self.budgets):
            for name in budget.provider_names:
                if name not in known:
                    field = "provider" if budget.provider is not None else "providers"
                    raise ValueError(f"budgets[{k}].{field}: unknown provider {name!r}")
            key = budget.key(self.identity.namespace)
            if key in budget_keys:
                raise ValueError(f"budgets[{k}].name: duplicate budget {key}")
            budget_keys.add(key)
        if self.privacy.local_only and not any(p.is_local for p in self.providers):
            raise ValueError("privacy.localOnly is set but no provider has locality local")

    def budgets_for(self, provider: str) -> list[_BudgetFacts]:
        """The budgets that may apply to calls of ``provider`` (whatever the model,
        data class or ServiceAccount)."""
        local = any(p.name == provider and p.is_local for p in self.providers)
        return [b for b in self.budgets if b.applies(provider, local=local)]

    @property
    def provider_names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.providers)

    @property
    def local_providers(self) -> frozenset[str]:
        """Providers of locality local: a budget naming no provider leaves them alone."""
        return frozenset(p.name for p in self.providers if p.is_local)


def _check_policy(prefix: str, policy: _PolicyFacts, known: set[str]) -> None:
    check_unique(f"{prefix}rules", [r.name for r in policy.rules], "names")
    for i, rule in enumerate(policy.rules):
        if rule.to.provider not in known:
            raise ValueError(
                f"{prefix}rules[{i}].to.provider: unknown provider {rule.to.provider!r}"
            )
    if policy.default.provider not in known:
        raise ValueError(f"{prefix}default.provider: unknown provider {policy.default.provider!r}")
    for j, name in enumerate(policy.fallback):
        if name not in known:
            raise ValueError(f"{prefix}fallback[{j}]: unknown provider {name!r}")
