"""The router: request facts + config + budget and health views -> a decision.

A pure function (no I/O, no clock, no randomness: the caller passes the random
number for keyless rollout assignment), so it can be tested exhaustively and run
for every request in microseconds. Routing, in order:

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

from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal

from ..contract import (
    Arm,
    BudgetSpec,
    ModelPrice,
    OnExceeded,
    Policy,
    ProviderModels,
    ProviderSpec,
    RuleMatch,
    SidecarConfig,
)
from ..contract.money import ZERO
from ..errors import AegisError
from ..request import (
    ZERO_PRICE,
    RequestFacts,
    listed_price,
    price_for,
    worst_case_cost,
)
from ..values import valueclass
from .catalog import config_index, resolve_model
from .ports import BudgetVerdict, BudgetView, HealthView
from .refusals import budget_refusal, no_provider, privacy_refusal

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


@valueclass
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


@valueclass
class RouteDecision:
    """Where one request goes: the candidates in order, or a refusal instead."""

    arm: Arm
    rule: str  # rule name, "default" or "pinned"
    data_class: str
    detected: frozenset[str]  # detector names
    candidates: tuple[Candidate, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (provider, reason), in the order considered
    refusal: AegisError | None = None  # an answer instead of a call


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
    index = config_index(config)
    policy: Policy = config
    served: Mapping[str, ProviderModels] = {}
    if arm == Arm.CANDIDATE and config.rollout is not None:
        policy = config.rollout.candidate
        served = config.rollout.candidate.provider_models
    else:
        arm = Arm.STABLE

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
                verdict = budget_view.can_cover(
                    name, worst, models=models, data_class=facts.data_class
                )
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
