"""Properties of the router over random configs, requests, budgets and provider
health: above all, a request of a local-only class never gets a cloud candidate."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from aegis.sidecar.contract import (
    Arm,
    CandidatePolicy,
    Complexity,
    OnExceeded,
    PrivacySpec,
    Quality,
    RolloutSpec,
    SidecarConfig,
    Target,
    decode,
)
from aegis.sidecar.request.facts import Kind, RequestFacts, build_facts
from aegis.sidecar.routing import StaticBudgetView, StaticHealth, choose_arm, models_for, route

CLASSES = ["public", "internal", "confidential", "pii", "hipaa"]
MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "qwen-plus",
    "qwen3-vl-30b-a3b-instruct",
    "text-embedding-3-small",
    "llama3",
    "mystery-model",
]
PROVIDER_TYPES = ["ollama", "openai", "dashscope", "openai-compatible"]
MAX_PROVIDERS = 6


@st.composite
def provider_specs(draw: st.DrawFn, index: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(PROVIDER_TYPES))
    spec: dict[str, Any] = {
        "name": f"p{index}",
        "type": kind,
        "models": {
            "default": draw(st.sampled_from(MODELS)),
            "vision": draw(st.lists(st.sampled_from(MODELS), max_size=2, unique=True)),
            "embedding": draw(st.none() | st.sampled_from(MODELS)),
        },
        "defaultMaxTokens": draw(st.integers(1, 8192)),
    }
    if kind == "openai-compatible":
        spec["baseURL"] = "http://upstream.test/v1"
    locality = draw(st.sampled_from([None, "local", "cloud"]))
    if locality is not None:
        spec["locality"] = locality
    if draw(st.booleans()):
        priced = draw(st.sampled_from(MODELS))
        spec["pricing"] = {priced: {"inputPer1M": "0.5", "outputPer1M": "1.5"}}
    return spec


@st.composite
def matches(draw: st.DrawFn) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if draw(st.booleans()):
        match["dataClass"] = draw(
            st.lists(st.sampled_from(CLASSES), min_size=1, max_size=3, unique=True)
        )
    if draw(st.booleans()):
        match["quality"] = draw(
            st.lists(st.sampled_from([q.value for q in Quality]), min_size=1, unique=True)
        )
    if draw(st.booleans()):
        match["complexity"] = draw(
            st.lists(st.sampled_from([c.value for c in Complexity]), min_size=1, unique=True)
        )
    if draw(st.booleans()):
        match["minBatchSize"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        match["maxBatchSize"] = draw(st.integers(match.get("minBatchSize", 1), 100))
    if draw(st.booleans()):
        match["vision"] = draw(st.booleans())
    return match


@st.composite
def policies(draw: st.DrawFn, names: list[str]) -> dict[str, Any]:
    def target() -> dict[str, Any]:
        to: dict[str, Any] = {"provider": draw(st.sampled_from(names))}
        if draw(st.booleans()):
            to["model"] = draw(st.sampled_from(MODELS))
        return to

    rules = [
        {"name": f"r{j}", "match": draw(matches()), "to": target()}
        for j in range(draw(st.integers(0, 4)))
    ]
    fallback = draw(st.lists(st.sampled_from(names), max_size=4))
    return {"rules": rules, "default": target(), "fallback": fallback}


@st.composite
def configs(draw: st.DrawFn) -> SidecarConfig:
    count = draw(st.integers(1, MAX_PROVIDERS))
    providers = [draw(provider_specs(i)) for i in range(count)]
    names = [p["name"] for p in providers]
    local_only = draw(st.lists(st.sampled_from(CLASSES), unique=True))
    privacy = {
        "localOnly": local_only,
        "defaultClass": draw(st.sampled_from(CLASSES)),
        "detectedClass": draw(st.sampled_from(CLASSES)),
    }
    doc: dict[str, Any] = {"providers": providers, "privacy": privacy, **draw(policies(names))}
    doc["budgets"] = [
        {
            "name": f"b{k}",
            "provider": draw(st.sampled_from(names)),
            "limitUSD": str(draw(st.decimals(0, 100, places=2))),
            "onExceeded": draw(st.sampled_from([e.value for e in OnExceeded])),
        }
        for k in range(draw(st.integers(0, 3)))
    ]
    if draw(st.booleans()):
        doc["rollout"] = {"candidate": draw(policies(names)), "weight": draw(st.integers(0, 100))}
    config = decode(SidecarConfig, _ensure_local(doc) if local_only else doc)
    return config


def _ensure_local(doc: dict[str, Any]) -> dict[str, Any]:
    """The config contract requires a local provider when a class is local-only."""
    providers = doc["providers"]
    if not any(
        p.get("locality") == "local" or (p["type"] == "ollama" and "locality" not in p)
        for p in providers
    ):
        providers[0]["locality"] = "local"
    return doc


@st.composite
def request_facts(draw: st.DrawFn, config: SidecarConfig) -> RequestFacts:
    kind: Kind = "chat" if draw(st.booleans()) else "embeddings"
    names = [p.name for p in config.providers]
    model = draw(
        st.sampled_from(["auto", "", "nope"])
        | st.sampled_from(MODELS)
        | st.builds(lambda p, m: f"{p}/{m}", st.sampled_from(names), st.sampled_from(MODELS))
    )
    return RequestFacts(
        kind=kind,
        model=model,
        data_class=draw(st.sampled_from(CLASSES)),
        header_class=None,
        declared_class="internal",
        detected=frozenset(),
        quality=draw(st.sampled_from(list(Quality))),
        complexity=draw(st.sampled_from(list(Complexity))),
        batch_size=draw(st.integers(1, 200)),
        user_key=None,
        stream=draw(st.booleans()),
        max_tokens=None if kind == "embeddings" else draw(st.none() | st.integers(0, 100_000)),
        choices=1 if kind == "embeddings" else draw(st.integers(1, 4)),
        image_parts=0 if kind == "embeddings" else draw(st.integers(0, 3)),
        prompt_text_tokens=draw(st.integers(1, 1_000_000)),
    )


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[SidecarConfig, RequestFacts, StaticBudgetView, StaticHealth, str]:
    config = draw(configs())
    facts = draw(request_facts(config))
    remaining = {
        b.name: draw(st.decimals(0, 100, places=6) | st.just(Decimal(0))) for b in config.budgets
    }
    budgets = StaticBudgetView(config.budgets, remaining)
    names = [p.name for p in config.providers]
    health = StaticHealth(draw(st.lists(st.sampled_from(names), unique=True)))
    arm = draw(st.sampled_from(["stable", "candidate"]))
    return config, facts, budgets, health, arm


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_routing_invariants(
    scenario: tuple[SidecarConfig, RequestFacts, StaticBudgetView, StaticHealth, str],
) -> None:
    config, facts, budgets, health, arm = scenario
    d = route(facts, config, budgets, health, Arm.CANDIDATE if arm == "candidate" else Arm.STABLE)
    local_only = facts.data_class in config.privacy.local_only

    # Exactly one of: candidates to try, or a refusal.
    assert (d.refusal is None) == bool(d.candidates)
    if d.refusal is not None:
        assert d.refusal.status in (400, 404, 429, 503)

    # THE privacy property: a local-only class never has a cloud candidate.
    if local_only:
        assert all(c.provider.is_local for c in d.candidates)
        if d.refusal is not None:
            assert d.refusal.code in (
                "privacy_no_local_provider",
                "model_not_found",
                "model_ambiguous",
            )
        # ...and it is served whenever some local provider has a model for it.
        if facts.model in ("", "auto"):
            servable = [p for p in config.providers if p.is_local and models_for(p, None, facts)]
            assert bool(d.candidates) == bool(servable)

    seen = [c.provider.name for c in d.candidates]
    assert len(seen) == len(set(seen))
    assert not set(seen) & {name for name, _ in d.skipped}

    # Circuit-open providers appear only when every candidate is open.
    opens = [health.is_open(name) for name in seen]
    assert all(opens) or not any(opens)

    for c in d.candidates:
        assert c.models and len(c.prices) == len(c.models)
        if c.provider.is_local:
            assert c.worst_case_usd == 0
            continue
        budgeted = bool(config.budgets_for(c.provider.name))
        if budgeted:
            # Budget safety: never unpriced, and every budget can cover the reservation.
            assert all(p is not None for p in c.prices)
            assert budgets.can_cover(c.provider.name, c.worst_case_usd).ok
        if facts.kind == "chat":
            expected = facts.max_tokens if facts.max_tokens is not None else None
            assert c.max_tokens_to_send == (expected or c.provider.default_max_tokens) or (
                expected == 0 and c.max_tokens_to_send == 0
            )
        cap = (c.max_tokens_to_send or 0) * facts.choices
        for model, price in zip(c.models, c.prices, strict=True):
            if price is not None:
                # The reservation covers the whole prompt bound and every output token
                # at list price (computed here, not with the router's own helper).
                exact = (
                    price.input_per_1m * facts.prompt_tokens_bound(model)
                    + price.output_per_1m * cap
                ) / 1_000_000
                assert c.worst_case_usd >= exact


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_route_is_deterministic(
    scenario: tuple[SidecarConfig, RequestFacts, StaticBudgetView, StaticHealth, str],
) -> None:
    config, facts, budgets, health, arm = scenario
    a = Arm.CANDIDATE if arm == "candidate" else Arm.STABLE
    assert route(facts, config, budgets, health, a) == route(facts, config, budgets, health, a)


# --------------------------------------------------------------- detection at the facts level

_PII = st.sampled_from(
    ["jane@example.com", "+44 20 7946 0958", "DE89 3704 0044 0532 0130 00", "4111 1111 1111 1111"]
)


@given(
    header=st.none() | st.sampled_from(CLASSES),
    detected_class=st.sampled_from(CLASSES),
    prose=st.text(alphabet="abc xyz.,", max_size=60),
    pii=st.none() | _PII,
)
def test_property_facts_class_never_below_header(
    header: str | None, detected_class: str, prose: str, pii: str | None
) -> None:
    privacy = PrivacySpec(detected_class=detected_class)
    text = f"{prose} {pii} {prose}" if pii else prose
    headers = CIMultiDict({"X-Aegis-Data-Class": header} if header else {})
    facts = build_facts("chat", {"messages": [{"role": "user", "content": text}]}, headers, privacy)
    declared = header or privacy.default_class
    assert privacy.rank(facts.data_class) >= privacy.rank(declared)
    if pii and privacy.rank(detected_class) > privacy.rank(declared):
        assert facts.data_class == detected_class


# --------------------------------------------------------------- rollout arms

KEYS = [f"user-{i}" for i in range(10_000)]


def _rollout(weight: int, step: int) -> RolloutSpec:
    candidate = CandidatePolicy(default=Target(provider="x"))
    return RolloutSpec(candidate=candidate, weight=weight, step=step)


@settings(max_examples=20, deadline=None)
@given(weight=st.integers(1, 99), step=st.integers(0, 1000), route_name=st.text(max_size=12))
def test_property_arm_share_matches_weight(weight: int, step: int, route_name: str) -> None:
    rollout = _rollout(weight, step)
    arms = [choose_arm(rollout, key, 0.0, route=route_name) for key in KEYS]
    share = 100 * arms.count(Arm.CANDIDATE) / len(KEYS)
    assert abs(share - weight) <= 2, share


@settings(max_examples=50, deadline=None)
@given(
    weight=st.integers(0, 100),
    step=st.integers(0, 1000),
    key=st.text(min_size=1, max_size=64),
    randoms=st.lists(st.floats(0, 1, exclude_max=True), min_size=2, max_size=5),
)
def test_property_arm_is_sticky_for_a_key_within_a_step(
    weight: int, step: int, key: str, randoms: list[float]
) -> None:
    rollout = _rollout(weight, step)
    assert len({choose_arm(rollout, key, r) for r in randoms}) == 1


@settings(max_examples=50, deadline=None)
@given(
    low=st.integers(0, 100),
    high=st.integers(0, 100),
    step=st.integers(0, 100),
    key=st.text(max_size=32),
)
def test_property_raising_the_weight_only_moves_keys_to_candidate(
    low: int, high: int, step: int, key: str
) -> None:
    low, high = min(low, high), max(low, high)
    if choose_arm(_rollout(low, step), key, 0.5) == "candidate":
        assert choose_arm(_rollout(high, step), key, 0.5) == "candidate"
