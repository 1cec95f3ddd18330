"""The router under budgets and prices: FallbackLocal and Reject budgets, the worst
case a call reserves, unpriced providers and models, and no provider at all."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from aegis.sidecar.contract import SidecarConfig
from aegis.sidecar.http.error_bodies import error_body
from aegis.sidecar.request.pricing import builtin_price, worst_case_cost
from tests.sidecar.router_cases import IMAGE, config_from, decide, example_doc, make_facts, names


@pytest.fixture(scope="module")
def example() -> SidecarConfig:
    return config_from(example_doc())


def test_fallback_local_budget_leaves_only_local(example: SidecarConfig) -> None:
    f = make_facts(example, headers={"X-Aegis-Batch-Size": "50"})
    d = decide(example, f, remaining={"dashscope-monthly": Decimal("0.001")})
    assert names(d) == ["local"] and d.skipped == (("dashscope", "budget"),)


def test_fallback_local_budget_skips_later_cloud_fallbacks(example: SidecarConfig) -> None:
    doc = example_doc()
    doc["rules"] = [{"name": "all", "to": {"provider": "dashscope"}}]
    doc["fallback"] = ["openai", "local"]
    config = config_from(doc)
    d = decide(config, make_facts(config), remaining={"dashscope-monthly": Decimal(0)})
    assert names(d) == ["local"]
    assert d.skipped == (("dashscope", "budget"), ("openai", "budget"))


def test_fallback_local_budget_adds_local_providers_when_chain_has_none() -> None:
    doc = example_doc()
    doc["rules"] = []
    doc["default"] = {"provider": "openai"}
    doc["fallback"] = ["dashscope"]
    config = config_from(doc)
    d = decide(config, make_facts(config), remaining={"openai-monthly": Decimal(0)})
    assert names(d) == ["local"] and d.candidates[0].reason == "budget"
    assert d.skipped == (("openai", "budget"), ("dashscope", "budget"))


def test_reject_budget_refuses_with_429_naming_it() -> None:
    doc = example_doc()
    doc["budgets"][1]["onExceeded"] = "Reject"
    config = config_from(doc)
    f = make_facts(config, headers={"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"})
    d = decide(config, f, remaining={"openai-monthly": Decimal("0.01")})
    assert d.candidates == () and d.refusal is not None
    assert (d.refusal.status, d.refusal.code) == (429, "budget_exceeded")
    assert "'openai-monthly'" in d.refusal.message
    assert error_body(d.refusal)["error"]["type"] == "insufficient_quota"


def test_reject_budget_on_a_later_fallback_only_skips_it() -> None:
    doc = example_doc()
    doc["budgets"][0]["onExceeded"] = "Reject"
    doc["rules"] = [{"name": "all", "to": {"provider": "openai"}}]
    config = config_from(doc)
    d = decide(config, make_facts(config), remaining={"dashscope-monthly": Decimal(0)})
    assert names(d) == ["openai", "local"] and ("dashscope", "budget") in d.skipped


def test_worst_case_uses_client_max_tokens_and_choices(example: SidecarConfig) -> None:
    f = make_facts(example, "hi", {"X-Aegis-Batch-Size": "20"}, max_tokens=100, n=3)
    d = decide(example, f)
    qwen = d.candidates[0]
    assert qwen.max_tokens_to_send == 100
    assert qwen.price is not None
    assert qwen.worst_case_usd == worst_case_cost(qwen.price, f.prompt_tokens_bound(), 300)


def test_paid_provider_without_client_cap_gets_the_provider_default(
    example: SidecarConfig,
) -> None:
    d = decide(example, make_facts(example, headers={"X-Aegis-Batch-Size": "20"}))
    dashscope, local = d.candidates
    assert dashscope.max_tokens_to_send == 4096 and dashscope.worst_case_usd > 0
    assert local.max_tokens_to_send is None and local.worst_case_usd == 0


def test_budget_check_uses_the_worst_case(example: SidecarConfig) -> None:
    f = make_facts(example, headers={"X-Aegis-Batch-Size": "20"}, max_tokens=1000)
    worst = decide(example, f).candidates[0].worst_case_usd
    just_enough = decide(example, f, remaining={"dashscope-monthly": worst})
    assert names(just_enough)[0] == "dashscope"
    too_little = decide(example, f, remaining={"dashscope-monthly": worst - Decimal("0.000001")})
    assert names(too_little) == ["local"]


def unpriced_doc(*, budget: bool) -> dict[str, Any]:
    doc = example_doc()
    doc["providers"].append(
        {
            "name": "vllm",
            "type": "openai-compatible",
            "baseURL": "http://vllm:8000/v1",
            "locality": "cloud",
            "models": {"default": "mystery-model"},
        }
    )
    doc["rules"] = [{"name": "all", "to": {"provider": "vllm"}}]
    if budget:
        doc["budgets"].append({"name": "vllm-monthly", "provider": "vllm", "limitUSD": "5"})
    return doc


def test_unpriced_provider_with_a_budget_is_skipped() -> None:
    config = config_from(unpriced_doc(budget=True))
    d = decide(config, make_facts(config))
    assert names(d) == ["dashscope", "local"] and d.skipped == (("vllm", "unpriced"),)


def test_unpriced_provider_without_budget_is_used_at_cost_zero() -> None:
    config = config_from(unpriced_doc(budget=False))
    d = decide(config, make_facts(config))
    vllm = d.candidates[0]
    assert vllm.provider.name == "vllm" and vllm.price is None and vllm.worst_case_usd == 0
    assert vllm.max_tokens_to_send == 4096


def test_unpriced_vision_model_is_dropped_priced_one_kept() -> None:
    doc = example_doc()
    doc["providers"][1]["models"]["vision"] = ["mystery-vl", "qwen3-vl-30b-a3b-instruct"]
    config = config_from(doc)
    d = decide(config, make_facts(config, IMAGE, {"X-Aegis-Batch-Size": "50"}))
    assert d.candidates[0].models == ("qwen3-vl-30b-a3b-instruct",)


def test_candidate_price_of_the_answering_model(example: SidecarConfig) -> None:
    d = decide(example, make_facts(example, IMAGE, {"X-Aegis-Batch-Size": "50"}))
    assert d.candidates[0].price_of("qwen3-vl-30b-a3b-thinking") == builtin_price(
        "qwen3-vl-30b-a3b-thinking"
    )


def test_no_provider_at_all_is_503() -> None:
    doc = example_doc()
    doc["privacy"] = {"localOnly": []}
    doc["rules"] = []
    doc["default"] = {"provider": "openai"}
    doc["fallback"] = []
    doc["providers"][2]["models"] = {"default": "gpt-4o-mini"}  # no embedding model
    config = config_from(doc)
    d = decide(config, make_facts(config, "x", kind="embeddings"))
    assert d.refusal is not None and (d.refusal.status, d.refusal.code) == (
        503,
        "no_provider_available",
    )
    assert "openai: no_model" in d.refusal.message
