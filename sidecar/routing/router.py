"""The router: request facts + config + budget and health views -> a decision.

A pure function (no I/O, no clock, no randomness: the caller passes the random
number for keyless rollout assignment), so it can be tested exhaustively and run
for every request in microseconds. DESIGN.md "Routing, in order":

1. the requested model: ``auto``/``aegis``/empty routes; ``<provider>/<model>`` or a
   model name configured on exactly one provider pins the target; anything else 404;
2. the policy of the rollout arm: first matching rule, else ``default``;
3. the models: the target's explicit model, else the provider's default; image
   input uses the provider's vision models, embeddings its embedding model (for
   the candidate arm, a provider's models may be replaced by ``providerModels``);
4. candidates = target, then the fallback chain, filtered in this order by
   privacy (local-only classes never reach a cloud provider, whatever else
   happens), a usable model, a known price (when a budget needs one), the budget
   (``Reject`` refuses, ``FallbackLocal`` leaves only local providers) and the
   circuit breaker.

Decisions on the edges, documented:

* If privacy (or a ``FallbackLocal`` budget) leaves no local provider from the
  target and the chain, every local provider in config order is added: the data
  stays local and the request is still served. Only when no local provider can
  serve it at all is the answer a refusal (503 / 429), never a cloud provider.
* If every candidate that passed all other filters has an open circuit, they are
  kept (reason ``circuit_open``) instead of failing: the breaker fails them fast if
  they are still down, and a recovered provider is not refused for a whole open
  window. Privacy and budget are never relaxed for this.
* A paid provider with no known price for the model is *unpriced*: refused
  (skipped, reason ``unpriced``) when it has a budget, since no reservation could
  bound it; allowed otherwise with price ``None`` and a worst case of 0.
* ``Reject`` refuses the request (429) only when the exceeded provider would have
  been the first candidate; as a later fallback it is just skipped.
* The budget view is advisory; the real reservation happens at call time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

from ..contract import (
    BudgetSpec,
    ModelPrice,
    OnExceeded,
    Policy,
    ProviderModels,
    ProviderSpec,
    RolloutSpec,
    RuleMatch,
    SidecarConfig,
)
from ..contract.money import ZERO
from ..errors import AegisError, BadRequest, ModelNotFound
from ..request.facts import RequestFacts
from ..request.pricing import ZERO_PRICE, listed_price, price_for, worst_case_cost
from ..request.privacy import PiiKind
from .ports import BudgetVerdict, BudgetView, HealthView
from .refusals import budget_refusal, no_provider, privacy_refusal

Arm = Literal["stable", "candidate"]
AUTO_MODELS = frozenset({"", "auto", "aegis"})

# Why a candidate is in the list.
REASON_TARGET = "target"  # the rule's, default's or pinned target
REASON_FALLBACK = "fallback"  # from the policy's fallback chain
REASON_PRIVACY = "privacy"  # a local provider added because the class is local-only
REASON_BUDGET = "budget"  # a local provider added after a FallbackLocal budget
REASON_CIRCUIT_OPEN = "circuit_open"  # kept although open: nothing else is left
# Why a provider was skipped (also: privacy, budget, circuit_open).
SKIP_NO_MODEL = "no_model"
SKIP_UNPRICED = "unpriced"

RULE_DEFAULT = "default"
RULE_PINNED = "pinned"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One provider to try, with the models to try on it in order."""

    provider: ProviderSpec
    models: tuple[str, ...]
    reason: str
    price: ModelPrice | None  # of models[0]; None = unknown (unpriced, unbudgeted)
    worst_case_usd: Decimal  # the reservation: the dearest of the models, rounded up
    max_tokens_to_send: int | None  # completion cap in force (client's or provider default)
    prices: tuple[ModelPrice | None, ...] = ()  # aligned with models

    def price_of(self, model: str) -> ModelPrice | None:
        """The price of the model that actually answered (the vision list may fall back)."""
        for name, price in zip(self.models, self.prices, strict=False):
            if name == model:
                return price
        return price_for(self.provider, model)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    arm: Arm
    rule: str  # rule name, "default" or "pinned"
    data_class: str
    detected: frozenset[PiiKind]
    candidates: tuple[Candidate, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (provider, reason), in the order considered
    refusal: AegisError | None = None  # an answer instead of a call


# ---------------------------------------------------------------- rollout arm


def choose_arm(
    rollout: RolloutSpec | None,
    sticky_key: str | None,
    fallback_random: float,
    *,
    route: str = "",
) -> Arm:
    """Stable or candidate policy for one request.

    With a key, a stable hash of ``route/salt/key`` puts the key in one of 10000
    buckets, so a user stays on one arm while the weight holds, and raising the
    weight only moves users from stable to candidate (the salt changes only with
    the candidate). Without a key, ``fallback_random`` in [0, 1)
    decides, which keeps this function pure.
    """
    if rollout is None or rollout.weight <= 0:
        return "stable"
    if rollout.weight >= 100:
        return "candidate"
    if sticky_key is None:
        return "candidate" if fallback_random * 100 < rollout.weight else "stable"
    digest = hashlib.blake2b(
        f"{route}/{rollout.salt}/{sticky_key}".encode(), digest_size=8
    ).digest()
    bucket = int.from_bytes(digest, "big") % 10_000
    return "candidate" if bucket < rollout.weight * 100 else "stable"


# ---------------------------------------------------------------- config index


@dataclass(frozen=True, slots=True)
class _Index:
    """Per-config lookups, built once per config object (configs are immutable)."""

    providers: dict[str, ProviderSpec]
    locals: tuple[str, ...]  # config order
    local_set: frozenset[str]  # is_local is a computed property: look it up once
    local_only: frozenset[str]  # data classes
    owners: dict[str, tuple[str, ...]]  # model name -> providers that configure it
    budgeted: frozenset[str]


_INDEXES: dict[int, tuple[SidecarConfig, _Index]] = {}


def _index(config: SidecarConfig) -> _Index:
    hit = _INDEXES.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    owners: dict[str, list[str]] = {}
    for spec in config.providers:
        models = spec.models
        names = [models.default, *models.vision, *spec.pricing]
        if models.embedding:
            names.append(models.embedding)
        for name in dict.fromkeys(names):
            owners.setdefault(name, []).append(spec.name)
    index = _Index(
        providers={p.name: p for p in config.providers},
        locals=tuple(p.name for p in config.providers if p.is_local),
        local_set=frozenset(p.name for p in config.providers if p.is_local),
        local_only=frozenset(config.privacy.local_only),
        owners={k: tuple(v) for k, v in owners.items()},
        budgeted=frozenset(b.provider for b in config.budgets),
    )
    if len(_INDEXES) >= 8:  # old configs after hot reloads; the cache holds them alive
        _INDEXES.clear()
    _INDEXES[id(config)] = (config, index)
    return index


def model_catalog(config: SidecarConfig) -> list[str]:
    """The model ids a client may ask for: ``auto``, then ``<provider>/<model>`` for
    every configured model, then bare names configured on exactly one provider."""
    index = _index(config)
    qualified = [f"{p}/{m}" for m, providers in index.owners.items() for p in providers]
    bare = [m for m, providers in index.owners.items() if len(providers) == 1]
    return ["auto", *qualified, *bare]


def resolve_model(model: str, config: SidecarConfig) -> tuple[str, str] | AegisError | None:
    """``None`` for automatic routing, ``(provider, model)`` when pinned, else a refusal."""
    if model.lower() in AUTO_MODELS:
        return None
    index = _index(config)
    provider, slash, rest = model.partition("/")
    if slash and rest and provider in index.providers:
        return provider, rest
    owners = index.owners.get(model, ())
    if len(owners) == 1:
        return owners[0], model
    if owners:
        choices = ", ".join(f"'{p}/{model}'" for p in owners)
        return BadRequest(
            f"The model `{model}` is served by several providers; use one of {choices}.",
            code="model_ambiguous",
            param="model",
        )
    return ModelNotFound(
        f"The model `{model}` does not exist or you do not have access to it.", param="model"
    )


# ---------------------------------------------------------------- routing


def rule_matches(match: RuleMatch, facts: RequestFacts) -> bool:
    """All given fields must hold (AND); a list holds when any value equals (OR)."""
    return (
        (match.data_class is None or facts.data_class in match.data_class)
        and (match.quality is None or facts.quality in match.quality)
        and (match.complexity is None or facts.complexity in match.complexity)
        and (match.min_batch_size is None or facts.batch_size >= match.min_batch_size)
        and (match.max_batch_size is None or facts.batch_size <= match.max_batch_size)
        and (match.vision is None or match.vision == facts.has_images)
    )


def models_for(
    provider: ProviderSpec,
    explicit: str | None,
    facts: RequestFacts,
    *,
    pinned: bool = False,
    served: ProviderModels | None = None,
) -> tuple[str, ...]:
    """The models to try on ``provider``; empty when it has none for this request.

    A model the client pinned is used as is. A rule's explicit model is a chat
    model: embeddings use the embedding model, and image input uses the vision
    list (led by the explicit model when that model is in the list). ``served``
    replaces the provider's own models (a rollout candidate's ``providerModels``).
    """
    if pinned and explicit:
        return (explicit,)
    models = served or provider.models
    if facts.kind == "embeddings":
        return (models.embedding,) if models.embedding else ()
    if facts.has_images:
        vision = tuple(models.vision)
        if explicit and explicit in vision:
            return (explicit, *(m for m in vision if m != explicit))
        return vision
    return (explicit or models.default,)


def route(
    facts: RequestFacts,
    config: SidecarConfig,
    budget_view: BudgetView,
    health_view: HealthView,
    arm: Arm,
) -> RouteDecision:
    """Decide where a request goes (see the module docstring for the order)."""
    index = _index(config)
    policy: Policy = config
    served: Mapping[str, ProviderModels] = {}
    if arm == "candidate" and config.rollout is not None:
        policy = config.rollout.candidate
        served = config.rollout.candidate.provider_models
    else:
        arm = "stable"

    pinned = resolve_model(facts.model, config)
    if isinstance(pinned, AegisError):
        return _refused(facts, arm, RULE_PINNED, pinned, [])
    explicit: str | None
    if pinned is not None:
        rule_name, (target, explicit) = RULE_PINNED, pinned
    else:
        rule_name, target, explicit = RULE_DEFAULT, policy.default.provider, policy.default.model
        for rule in policy.rules:
            if rule_matches(rule.match, facts):
                rule_name, target, explicit = rule.name, rule.to.provider, rule.to.model
                break

    local_only = facts.data_class in index.local_only
    local_set = index.local_set
    queue: list[tuple[str, str]] = [(target, REASON_TARGET)]
    queue += [(name, REASON_FALLBACK) for name in policy.fallback]
    accepted: list[Candidate] = []
    held: list[Candidate] = []  # passed every filter but the circuit breaker
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    # The FallbackLocal budget that sent the rest to local providers, and the worst case
    # it could not cover.
    exceeded: tuple[BudgetSpec, BudgetVerdict, Decimal] | None = None
    extended = has_local = False
    position = 0
    while True:
        if position == len(queue):
            # Privacy or budget left nothing local: every local provider, config order.
            if extended or has_local or not (local_only or exceeded is not None):
                break
            extended = True
            why = REASON_PRIVACY if local_only else REASON_BUDGET
            queue += [(name, why) for name in index.locals]
            continue
        name, reason = queue[position]
        position += 1
        if name in seen:
            continue
        seen.add(name)
        provider = index.providers[name]
        is_local = name in local_set
        if not is_local and (local_only or exceeded is not None):
            skipped.append((name, REASON_PRIVACY if local_only else REASON_BUDGET))
            continue
        is_target = reason == REASON_TARGET
        models = models_for(
            provider,
            explicit if is_target else None,
            facts,
            pinned=is_target and bool(pinned),
            served=served.get(name),
        )
        if not models:
            skipped.append((name, SKIP_NO_MODEL))
            continue
        cap = facts.max_tokens
        worst = ZERO
        if is_local:
            prices: tuple[ModelPrice | None, ...] = (ZERO_PRICE,) * len(models)
        else:
            prices = tuple(listed_price(provider, m) for m in models)
            if cap is None and facts.kind == "chat":
                cap = provider.default_max_tokens  # sent upstream: the reservation holds
            if name in index.budgeted and any(p is None for p in prices):
                priced = [(m, p) for m, p in zip(models, prices, strict=True) if p is not None]
                if not priced:
                    skipped.append((name, SKIP_UNPRICED))
                    continue
                models, prices = tuple(m for m, _ in priced), tuple(p for _, p in priced)
            worst = _worst_case(facts, models, prices, cap)
            if name in index.budgeted:
                verdict = budget_view.can_cover(name, worst)
                if not verdict.ok and verdict.budget is not None:
                    budget = verdict.budget
                    if budget.on_exceeded is OnExceeded.REJECT and not accepted and not held:
                        skipped.append((name, verdict.reason))
                        refusal = _over_budget(budget, verdict, worst)
                        return _refused(facts, arm, rule_name, refusal, skipped)
                    skipped.append((name, verdict.reason))
                    if budget.on_exceeded is OnExceeded.FALLBACK_LOCAL and exceeded is None:
                        exceeded = (budget, verdict, worst)
                    continue
        candidate = Candidate(provider, models, reason, prices[0], worst, cap, prices)
        has_local = has_local or is_local
        if health_view.is_open(name):
            held.append(candidate)
        else:
            accepted.append(candidate)

    if accepted:
        skipped += [(c.provider.name, REASON_CIRCUIT_OPEN) for c in held]
        chosen = tuple(accepted)
    else:
        chosen = tuple(replace(c, reason=REASON_CIRCUIT_OPEN) for c in held)
    if chosen:
        return RouteDecision(
            arm, rule_name, facts.data_class, facts.detected, chosen, tuple(skipped)
        )
    refusal = _no_candidate(facts, local_only, exceeded, skipped)
    return _refused(facts, arm, rule_name, refusal, skipped)


def _refused(
    facts: RequestFacts, arm: Arm, rule: str, refusal: AegisError, skipped: list[tuple[str, str]]
) -> RouteDecision:
    return RouteDecision(
        arm, rule, facts.data_class, facts.detected, skipped=tuple(skipped), refusal=refusal
    )


def _worst_case(
    facts: RequestFacts,
    models: tuple[str, ...],
    prices: tuple[ModelPrice | None, ...],
    cap: int | None,
) -> Decimal:
    """The dearest model's worst case: any of them may end up answering."""
    out = (cap or 0) * facts.choices
    worst = ZERO
    for model, price in zip(models, prices, strict=True):
        if price is not None:
            worst = max(worst, worst_case_cost(price, facts.prompt_tokens_bound(model), out))
    return worst


def _no_candidate(
    facts: RequestFacts,
    local_only: bool,
    exceeded: tuple[BudgetSpec, BudgetVerdict, Decimal] | None,
    skipped: list[tuple[str, str]],
) -> AegisError:
    detail = ", ".join(f"{name}: {reason}" for name, reason in skipped) or "none configured"
    if local_only:
        return privacy_refusal(facts.data_class, detail)
    if exceeded is not None:
        return _over_budget(*exceeded, skipped=detail)
    return no_provider(detail)


def _over_budget(
    budget: BudgetSpec, verdict: BudgetVerdict, worst: Decimal, skipped: str | None = None
) -> AegisError:
    return budget_refusal(
        budget,
        verdict.reason,
        needed=worst,
        period=verdict.period,
        available=verdict.available,
        skipped=skipped,
    )
