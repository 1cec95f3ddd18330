"""Prices (config over the built-in table, snapshots), cost rounding, and the
prompt-token bound the budget reservation relies on."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aegis.sidecar.contract import ModelPrice, ProviderSpec, decode
from aegis.sidecar.request.pricing import (
    BUILTIN_PRICES,
    IMAGE_TOKENS,
    TOKENS_PER_EMBEDDING_INPUT,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REQUEST,
    ZERO_PRICE,
    builtin_price,
    cost,
    image_tokens_for,
    price_for,
    prompt_token_bound,
    worst_case_cost,
)


def provider(**overrides: Any) -> ProviderSpec:
    spec: dict[str, Any] = {"name": "openai", "type": "openai", "models": {"default": "gpt-4o"}}
    spec.update(overrides)
    return decode(ProviderSpec, spec)


def price(inp: str, out: str) -> ModelPrice:
    return decode(ModelPrice, {"inputPer1M": Decimal(inp), "outputPer1M": Decimal(out)})


# --------------------------------------------------------------- lookup
PUBLISHED = Path(__file__).parent / "data" / "published_prices.csv"


def published() -> dict[str, tuple[Decimal, Decimal]]:
    """model -> (input, output) USD per 1M tokens, as the providers publish them."""
    lines = [line for line in PUBLISHED.read_text().splitlines() if not line.startswith("#")]
    return {
        row["model"]: (Decimal(row["input_per_1m"]), Decimal(row["output_per_1m"]))
        for row in csv.DictReader(lines)
    }


def test_the_builtin_table_is_the_providers_published_prices() -> None:
    prices = published()
    assert set(BUILTIN_PRICES) == set(prices)  # no model priced without a published price
    for model, (inp, out) in prices.items():
        found = builtin_price(model)
        assert found is not None, model
        assert (found.input_per_1m, found.output_per_1m) == (inp, out), model


@pytest.mark.parametrize(
    ("model", "tokens_in", "tokens_out"),
    [("gpt-4o", 1234, 567), ("claude-sonnet-4-5", 10_000, 2_000), ("qwen-plus", 999_999, 1)],
)
def test_cost_is_tokens_times_the_published_price(
    model: str, tokens_in: int, tokens_out: int
) -> None:
    inp, out = published()[model]
    expected = (inp * tokens_in + out * tokens_out) / 1_000_000
    found = builtin_price(model)
    assert found is not None
    assert cost(found, tokens_in, tokens_out) == expected.quantize(Decimal("0.000001"))


def test_builtin_exact_names() -> None:
    assert builtin_price("gpt-4o") == price("2.5", "10")
    assert builtin_price("gpt-4o-mini") == price("0.15", "0.6")
    assert builtin_price("qwen-plus") == price("0.4", "1.2")
    assert builtin_price("text-embedding-3-small") == price("0.02", "0")


def test_builtin_dated_snapshot_uses_longest_prefix() -> None:
    assert builtin_price("gpt-4o-2024-08-06") == builtin_price("gpt-4o")
    assert builtin_price("gpt-4o-mini-2024-07-18") == builtin_price("gpt-4o-mini")
    assert builtin_price("gpt-4.1-mini-2025-04-14") == builtin_price("gpt-4.1-mini")
    assert builtin_price("qwen-plus-latest") == builtin_price("qwen-plus")
    assert builtin_price("gpt-4-0125-preview") == builtin_price("gpt-4")


def test_builtin_exact_snapshot_beats_prefix() -> None:
    # The May 2024 gpt-4o snapshot is dearer than gpt-4o.
    assert builtin_price("gpt-4o-2024-05-13") == price("5", "15")


@pytest.mark.parametrize("model", ["gpt-4.5-preview", "gpt-4o-audio-preview", "llama3", "o1x"])
def test_unknown_models_have_no_price(model: str) -> None:
    assert builtin_price(model) is None


def test_config_pricing_overrides_table() -> None:
    spec = provider(pricing={"gpt-4o": {"inputPer1M": "1", "outputPer1M": "2"}})
    assert price_for(spec, "gpt-4o") == price("1", "2")
    assert price_for(spec, "gpt-4o-2024-11-20") == price("1", "2")  # snapshot of a priced name
    assert price_for(spec, "gpt-4o-mini") == builtin_price("gpt-4o-mini")  # table still used


def test_config_pricing_for_model_missing_from_table() -> None:
    spec = provider(
        type="openai-compatible",
        baseURL="http://vllm:8000/v1",
        pricing={"my-model": {"inputPer1M": "0.3", "outputPer1M": "0.9"}},
    )
    assert price_for(spec, "my-model") == price("0.3", "0.9")
    assert price_for(spec, "other-model") is None


def test_local_provider_costs_nothing_even_with_a_known_model_name() -> None:
    spec = provider(name="vllm", type="openai-compatible", baseURL="http://x/v1", locality="local")
    assert price_for(spec, "gpt-4o") == ZERO_PRICE
    ollama = provider(name="local", type="ollama", models={"default": "llama3"})
    assert price_for(ollama, "llama3") == ZERO_PRICE


# --------------------------------------------------------------- cost and rounding


def test_cost_is_exact_in_micro_dollars() -> None:
    # 1234 * 2.5 / 1e6 + 567 * 10 / 1e6 = 0.003085 + 0.00567
    assert cost(price("2.5", "10"), 1234, 567) == Decimal("0.008755")


def test_cost_rounds_half_even_and_worst_case_rounds_up() -> None:
    p = price("0.15", "0")  # 0.00000015 USD per token
    assert cost(p, 10, 0) == Decimal("0.000002")  # 0.0000015 -> 2 (half to even)
    assert cost(p, 30, 0) == Decimal("0.000004")  # 0.0000045 -> 4 (half to even)
    assert cost(p, 1, 0) == Decimal("0.000000")
    assert worst_case_cost(p, 1, 0) == Decimal("0.000001")  # ceiling
    assert worst_case_cost(p, 30, 0) == Decimal("0.000005")


def test_zero_price_costs_zero() -> None:
    assert cost(ZERO_PRICE, 10**9, 10**9) == 0
    assert worst_case_cost(ZERO_PRICE, 10**9, 10**9) == 0


@given(
    inp=st.decimals(min_value=0, max_value=200, places=6),
    out=st.decimals(min_value=0, max_value=800, places=6),
    prompt_bound=st.integers(0, 2_000_000),
    max_tokens=st.integers(0, 200_000),
    data=st.data(),
)
def test_property_reservation_covers_settlement(
    inp: Decimal, out: Decimal, prompt_bound: int, max_tokens: int, data: st.DataObject
) -> None:
    p = price(str(inp), str(out))
    used_in = data.draw(st.integers(0, prompt_bound))
    used_out = data.draw(st.integers(0, max_tokens))
    reserved = worst_case_cost(p, prompt_bound, max_tokens)
    settled = cost(p, used_in, used_out)
    assert settled <= reserved
    assert reserved.as_tuple().exponent == -6 and settled.as_tuple().exponent == -6


# --------------------------------------------------------------- the prompt bound


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": list(messages), **extra}


def test_bound_counts_utf8_bytes_and_message_overhead() -> None:
    body = chat({"role": "user", "content": "héllo"}, {"role": "assistant", "content": "世界"})
    expected = TOKENS_PER_REQUEST + 2 * TOKENS_PER_MESSAGE + len("héllo".encode()) + 6
    assert prompt_token_bound(body) == expected


def test_bound_counts_text_parts_and_images() -> None:
    body = chat(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 9000}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        }
    )
    text_only = TOKENS_PER_REQUEST + TOKENS_PER_MESSAGE + len("describe")
    # The base64 payload is not text: each image costs the fixed allowance instead.
    assert prompt_token_bound(body) == text_only + 2 * IMAGE_TOKENS
    assert prompt_token_bound(body, image_tokens=100) == text_only + 200


def test_gpt_4o_mini_images_get_a_larger_allowance() -> None:
    assert image_tokens_for("gpt-4o-mini") > image_tokens_for("gpt-4o") == IMAGE_TOKENS
    assert image_tokens_for("gpt-4o-mini-2024-07-18") == image_tokens_for("gpt-4o-mini")


def test_bound_counts_tools_tool_calls_and_schema() -> None:
    plain = chat({"role": "user", "content": "hi"})
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with_tools = chat({"role": "user", "content": "hi"}, tools=tools)
    assert prompt_token_bound(with_tools) > prompt_token_bound(plain) + len(str(tools)) // 2
    # Anthropic's tool-use system prompt (up to ~530 tokens) is inside the bound
    assert prompt_token_bound(with_tools) >= prompt_token_bound(plain) + 530
    call = chat(
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
    )
    assert prompt_token_bound(call) > prompt_token_bound(plain) + 2 * TOKENS_PER_MESSAGE
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert prompt_token_bound(chat({"role": "user", "content": "hi"}, response_format=schema)) > (
        prompt_token_bound(plain)
    )


def test_embedding_bounds() -> None:
    assert prompt_token_bound({"input": "abc"}) == 3 + TOKENS_PER_EMBEDDING_INPUT
    assert prompt_token_bound({"input": ["ab", "ü"]}) == 2 + 2 + 2 * TOKENS_PER_EMBEDDING_INPUT
    assert prompt_token_bound({"input": [1, 2, 3]}) == 3 + TOKENS_PER_EMBEDDING_INPUT
    assert prompt_token_bound({"input": [[1, 2], [3]]}) == 3 + 2 * TOKENS_PER_EMBEDDING_INPUT


@given(st.lists(st.text(max_size=80), min_size=1, max_size=6))
def test_property_bound_is_at_least_the_utf8_bytes(texts: list[str]) -> None:
    body = chat(*({"role": "user", "content": t} for t in texts))
    # Byte-level BPE never yields more tokens than bytes; the bound must cover that.
    assert prompt_token_bound(body) >= sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
