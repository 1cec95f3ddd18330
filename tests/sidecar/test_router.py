"""The router, case by case: model resolution, rules, model choice, privacy,
circuit breakers, rollout arms and speed (budgets and prices:
``test_router_budgets.py``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from msgspec.structs import replace

from aegis.sidecar.contract import (
    Arm,
    Complexity,
    ConfigError,
    Quality,
    RuleMatch,
    SidecarConfig,
    decode,
)
from aegis.sidecar.errors import ModelNotFound
from aegis.sidecar.http.error_bodies import error_body
from aegis.sidecar.request.pricing import builtin_price, worst_case_cost
from aegis.sidecar.routing import choose_arm, model_catalog, rule_matches
from tests.sidecar.router_cases import (
    IMAGE,
    config_from,
    decide,
    example_doc,
    make_facts,
    names,
)


@pytest.fixture(scope="module")
def example() -> SidecarConfig:
    return config_from(example_doc())


# --------------------------------------------------------------- the example config


def test_plain_request_goes_to_default_then_fallback(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example))
    assert d.refusal is None and d.rule == "default" and d.arm == "stable"
    assert names(d) == ["local", "dashscope"]
    assert [c.reason for c in d.candidates] == ["target", "fallback"]
    assert d.candidates[0].models == ("gemma3:4b",) and d.candidates[1].models == ("qwen-plus",)
    assert d.skipped == ()


def test_detected_pii_stays_local(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example, "mail me: jane@example.com"))
    assert d.data_class == "pii" and d.rule == "sensitive"
    assert names(d) == ["local"]
    assert d.skipped == (("dashscope", "privacy"),)


def test_critical_high_goes_to_openai_gpt_4o(example: SidecarConfig) -> None:
    f = make_facts(example, headers={"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"})
    d = decide(example, f)
    assert d.rule == "critical" and names(d) == ["openai", "dashscope", "local"]
    assert d.candidates[0].models == ("gpt-4o",)
    assert d.candidates[0].price == builtin_price("gpt-4o")


def test_and_semantics_critical_alone_does_not_match(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example, headers={"X-Aegis-Quality": "critical"}))
    assert d.rule == "default"


def test_batch_rule_min_is_inclusive(example: SidecarConfig) -> None:
    assert decide(example, make_facts(example, headers={"X-Aegis-Batch-Size": "10"})).rule == (
        "default"
    )
    d = decide(example, make_facts(example, headers={"X-Aegis-Batch-Size": "11"}))
    assert d.rule == "batch" and names(d) == ["dashscope", "local"]


def test_vision_uses_each_providers_vision_list(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example, IMAGE, {"X-Aegis-Batch-Size": "50"}))
    assert d.candidates[0].models == ("qwen3-vl-30b-a3b-instruct", "qwen3-vl-30b-a3b-thinking")
    assert d.candidates[1].models == ("qwen2.5vl:7b",)
    # The reservation covers the dearer model of the list (the thinking model).
    f = make_facts(example, IMAGE, {"X-Aegis-Batch-Size": "50"})
    thinking = builtin_price("qwen3-vl-30b-a3b-thinking")
    assert thinking is not None
    assert d.candidates[0].worst_case_usd == worst_case_cost(
        thinking, f.prompt_tokens_bound("qwen3-vl-30b-a3b-thinking"), 4096
    )


def test_embeddings_use_embedding_models(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example, ["a", "b"], kind="embeddings"))
    assert names(d) == ["local", "dashscope"]
    assert d.candidates[0].models == ("nomic-embed-text",)
    assert d.candidates[1].models == ("text-embedding-v4",)
    assert d.candidates[1].max_tokens_to_send is None  # no completion for embeddings


# --------------------------------------------------------------- model resolution


@pytest.mark.parametrize("model", ["", "auto", "AUTO", "aegis"])
def test_auto_model_names_route(example: SidecarConfig, model: str) -> None:
    assert decide(example, make_facts(example, model=model)).rule == "default"


def test_provider_slash_model_pins_only_a_declared_model(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example, model="openai/gpt-4o"))
    assert d.rule == "pinned" and names(d) == ["openai", "dashscope", "local"]
    assert d.candidates[0].models == ("gpt-4o",)
    # A model the route does not declare for that provider: 404, never called.
    for model in ("openai/gpt-4.1", "openai/qwen-plus", "local/gpt-4o-mini"):
        refused = decide(example, make_facts(example, model=model)).refusal
        assert isinstance(refused, ModelNotFound) and refused.status == 404, model


def test_bare_configured_name_pins_its_provider(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example, model="qwen-plus"))
    assert d.rule == "pinned" and names(d)[0] == "dashscope"
    d = decide(example, make_facts(example, model="gemma3:4b"))
    assert names(d) == ["local", "dashscope"]


def test_pinned_model_wins_over_vision_list(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example, IMAGE, model="openai/gpt-4o-mini"))
    assert d.candidates[0].models == ("gpt-4o-mini",)
    assert d.candidates[1].models == ("qwen3-vl-30b-a3b-instruct", "qwen3-vl-30b-a3b-thinking")


def test_pinned_cloud_model_with_pii_is_rerouted_locally(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example, "jane@example.com", model="openai/gpt-4o"))
    assert names(d) == ["local"]
    assert ("openai", "privacy") in d.skipped


@pytest.mark.parametrize("model", ["gpt-9", "nobody/gpt-4o", "openai/"])
def test_unknown_model_is_404(example: SidecarConfig, model: str) -> None:
    d = decide(example, make_facts(example, model=model))
    assert d.candidates == () and d.refusal is not None
    assert (d.refusal.status, d.refusal.code, d.refusal.param) == (404, "model_not_found", "model")
    assert f"`{model}`" in d.refusal.message
    assert error_body(d.refusal)["error"]["type"] == "invalid_request_error"


def test_model_on_two_providers_is_ambiguous() -> None:
    doc = example_doc()
    doc["providers"][1]["models"]["default"] = "gpt-4o-mini"  # dashscope and openai
    config = config_from(doc)
    d = decide(config, make_facts(config, model="gpt-4o-mini"))
    assert d.refusal is not None and d.refusal.status == 400
    assert "'dashscope/gpt-4o-mini'" in d.refusal.message
    assert "'openai/gpt-4o-mini'" in d.refusal.message


def test_model_catalog(example: SidecarConfig) -> None:
    catalog = model_catalog(example)
    assert catalog[0] == "auto"
    assert {"local/gemma3:4b", "dashscope/qwen-plus", "openai/gpt-4o", "qwen-plus"} <= set(catalog)


# --------------------------------------------------------------- rules


def test_rule_match_semantics(example: SidecarConfig) -> None:
    f = make_facts(example, IMAGE, {"X-Aegis-Quality": "high", "X-Aegis-Batch-Size": "5"})
    assert rule_matches(RuleMatch(), f)
    assert rule_matches(RuleMatch(quality=[Quality.LOW, Quality.HIGH]), f)  # a list is OR
    assert not rule_matches(
        RuleMatch(quality=[Quality.HIGH], complexity=[Complexity.LOW]), f
    )  # fields AND
    assert rule_matches(RuleMatch(min_batch_size=5, max_batch_size=5), f)  # inclusive
    assert not rule_matches(RuleMatch(max_batch_size=4), f)
    assert rule_matches(RuleMatch(vision=True), f)
    assert not rule_matches(RuleMatch(vision=False), f)
    assert rule_matches(RuleMatch(data_class=["internal"]), f)
    with pytest.raises(ConfigError, match=r"dataClass: Expected `array` of length >= 1"):
        decode(RuleMatch, {"dataClass": []})  # an empty list would silently match nothing


def test_first_matching_rule_wins() -> None:
    doc = example_doc()
    doc["rules"] = [
        {"name": "first", "match": {"minBatchSize": 2}, "to": {"provider": "openai"}},
        {"name": "second", "match": {"minBatchSize": 2}, "to": {"provider": "dashscope"}},
    ]
    config = config_from(doc)
    d = decide(config, make_facts(config, headers={"X-Aegis-Batch-Size": "3"}))
    assert d.rule == "first" and names(d)[0] == "openai"


def test_rule_model_is_for_chat_not_embeddings() -> None:
    doc = example_doc()
    doc["default"] = {"provider": "openai", "model": "gpt-4.1"}
    config = config_from(doc)
    d = decide(config, make_facts(config, "x", kind="embeddings"))
    assert d.candidates[0].models == ("text-embedding-3-small",)


def test_rule_model_leads_vision_list_only_when_it_is_a_vision_model() -> None:
    doc = example_doc()
    doc["default"] = {"provider": "dashscope", "model": "qwen3-vl-30b-a3b-thinking"}
    config = config_from(doc)
    d = decide(config, make_facts(config, IMAGE))
    assert d.candidates[0].models == ("qwen3-vl-30b-a3b-thinking", "qwen3-vl-30b-a3b-instruct")
    doc["default"] = {"provider": "dashscope", "model": "qwen-max"}
    config = config_from(doc)
    d = decide(config, make_facts(config, IMAGE))
    assert d.candidates[0].models == ("qwen3-vl-30b-a3b-instruct", "qwen3-vl-30b-a3b-thinking")


def test_provider_without_the_needed_model_is_skipped() -> None:
    doc = example_doc()
    doc["providers"][0]["models"] = {"default": "gemma3:4b"}  # local: no vision, no embedding
    config = config_from(doc)
    d = decide(config, make_facts(config, IMAGE))
    assert names(d) == ["dashscope"] and d.skipped == (("local", "no_model"),)


# --------------------------------------------------------------- privacy


def test_local_only_class_appends_local_providers_when_chain_has_none() -> None:
    doc = example_doc()
    doc["rules"] = []
    doc["default"] = {"provider": "openai"}
    doc["fallback"] = ["dashscope"]
    config = config_from(doc)
    d = decide(config, make_facts(config, headers={"X-Aegis-Data-Class": "hipaa"}))
    assert names(d) == ["local"] and d.candidates[0].reason == "privacy"
    assert d.skipped == (("openai", "privacy"), ("dashscope", "privacy"))


def test_local_only_class_without_a_usable_local_provider_is_refused() -> None:
    doc = example_doc()
    doc["providers"][0]["models"] = {"default": "gemma3:4b"}  # no local vision model
    config = config_from(doc)
    d = decide(config, make_facts(config, IMAGE, {"X-Aegis-Data-Class": "confidential"}))
    assert d.candidates == () and d.refusal is not None
    assert (d.refusal.status, d.refusal.code) == (503, "privacy_no_local_provider")
    assert "'confidential'" in d.refusal.message
    assert error_body(d.refusal)["error"]["type"] == "server_error"


def test_local_only_class_with_every_local_provider_down_never_goes_to_cloud(
    example: SidecarConfig,
) -> None:
    f = make_facts(example, headers={"X-Aegis-Data-Class": "pii"})
    d = decide(example, f, open_circuits=("local",))
    # Kept as the last resort (the breaker fails it fast) rather than sent to the cloud.
    assert names(d) == ["local"] and d.candidates[0].reason == "circuit_open"


def test_public_class_may_use_cloud(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example, headers={"X-Aegis-Data-Class": "public"}))
    assert names(d) == ["local", "dashscope"]


# --------------------------------------------------------------- circuit breakers


def test_open_circuit_is_skipped_when_others_remain(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example), open_circuits=("local",))
    assert names(d) == ["dashscope"] and d.skipped == (("local", "circuit_open"),)


def test_all_open_circuits_are_kept_in_order(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example), open_circuits=("local", "dashscope"))
    assert names(d) == ["local", "dashscope"]
    assert {c.reason for c in d.candidates} == {"circuit_open"}
    assert d.skipped == ()


# --------------------------------------------------------------- rollout


def rollout_doc(weight: int) -> dict[str, Any]:
    doc = example_doc()
    doc["rollout"] = {
        "candidate": {"rules": [], "default": {"provider": "dashscope"}, "fallback": ["local"]},
        "weight": weight,
        "step": 2,
    }
    return doc


def test_candidate_arm_uses_the_candidate_policy() -> None:
    config = config_from(rollout_doc(50))
    d = decide(config, make_facts(config), arm="candidate")
    assert d.arm == "candidate" and d.rule == "default" and names(d) == ["dashscope", "local"]
    assert decide(config, make_facts(config), arm="stable").candidates[0].provider.name == "local"


def test_candidate_provider_models_replace_models_for_the_candidate_arm_only() -> None:
    doc = rollout_doc(50)
    doc["rollout"]["candidate"]["providerModels"] = {
        "dashscope": {"default": "qwen-max", "vision": ["qwen3-vl-30b-a3b-thinking"]}
    }
    config = config_from(doc)
    d = decide(config, make_facts(config), arm="candidate")
    assert d.candidates[0].models == ("qwen-max",)
    assert d.candidates[0].price == builtin_price("qwen-max")
    vision = decide(config, make_facts(config, IMAGE), arm="candidate")
    assert vision.candidates[0].models == ("qwen3-vl-30b-a3b-thinking",)
    batch = make_facts(config, headers={"X-Aegis-Batch-Size": "50"})
    stable = decide(config, batch, arm="stable")  # the stable batch rule: dashscope
    assert (stable.rule, stable.candidates[0].models) == ("batch", ("qwen-plus",))
    doc["rollout"]["candidate"]["providerModels"] = {"nope": {"default": "x"}}
    with pytest.raises(ConfigError, match=r"providerModels\.nope: unknown provider"):
        config_from(doc)


def test_candidate_arm_without_rollout_is_stable(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example), arm="candidate")
    assert d.arm == "stable" and names(d)[0] == "local"


def test_choose_arm_edges() -> None:
    assert choose_arm(None, "u", 0.0) == "stable"
    zero = config_from(rollout_doc(0)).rollout
    full = config_from(rollout_doc(100)).rollout
    assert choose_arm(zero, "u", 0.0) == "stable"
    assert choose_arm(full, "u", 0.99) == "candidate"
    half = config_from(rollout_doc(50)).rollout
    assert choose_arm(half, None, 0.49) == "candidate"
    assert choose_arm(half, None, 0.5) == "stable"


def test_choose_arm_is_a_stable_hash_salted_by_candidate_and_route() -> None:
    half = config_from(rollout_doc(50)).rollout
    assert half is not None
    keys = [f"user-{i}" for i in range(400)]
    first = [choose_arm(half, k, 0.0) for k in keys]
    assert first == [choose_arm(half, k, 0.99) for k in keys]  # random ignored with a key
    # a later step of the same candidate keeps every user where they were...
    next_step = replace(half, step=3)
    assert first == [choose_arm(next_step, k, 0.0) for k in keys]
    # ...and a higher weight only moves users from stable to candidate
    higher = replace(half, weight=75)
    moved = [choose_arm(higher, k, 0.0) for k in keys]
    assert all(m == "candidate" for f, m in zip(first, moved, strict=True) if f == "candidate")
    assert moved.count(Arm.CANDIDATE) > first.count(Arm.CANDIDATE)
    # a new candidate (new salt) or another route draws a different set of users
    other_candidate = replace(half, salt="c2")
    assert first != [choose_arm(other_candidate, k, 0.0) for k in keys]
    assert first != [choose_arm(half, k, 0.0, route="other") for k in keys]


# --------------------------------------------------------------- purity and speed


def test_route_does_not_depend_on_call_history(example: SidecarConfig) -> None:
    f = make_facts(example, headers={"X-Aegis-Batch-Size": "50"})
    first = decide(example, f)
    decide(example, make_facts(example, "jane@example.com"))
    assert decide(example, f) == first
    # A structurally equal config object gives the same decision (no identity leaks).
    assert decide(config_from(copy.deepcopy(example_doc())), f) == first
