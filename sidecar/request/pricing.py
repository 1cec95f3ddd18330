"""Prices, costs and the worst-case bound a budget reservation needs.

Money is ``Decimal`` throughout. Two roundings, on purpose:

* ``cost`` (settlement, what the ledger records) rounds to micro-dollars with
  ROUND_HALF_EVEN: over millions of tiny rows it has no systematic bias.
* ``worst_case_cost`` (reservation) rounds UP (ROUND_CEILING), so the amount
  reserved is never below the amount later settled: with tokens_in <= bound and
  tokens_out <= max_tokens, half-even(real) <= ceiling(real) <= ceiling(bound).

The prompt bound is cheap and never below the true token count: byte-level BPE
tokenizers (OpenAI's, Qwen's) never produce more tokens than UTF-8 bytes, and the
fixed allowances cover the chat template, tool schemas and images.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Any

from ..contract import ModelPrice, ProviderSpec
from ..contract.money import quantize_usd

ONE_MILLION = Decimal(1_000_000)
ZERO_PRICE = ModelPrice(input_per_1m=Decimal(0), output_per_1m=Decimal(0))

# Template tokens around each message (role markers, separators) and per request
# (reply priming, a provider's implicit system prompt); generous on purpose.
TOKENS_PER_MESSAGE = 8
TOKENS_PER_REQUEST = 32
TOKENS_PER_TOOL = 32  # the wrapper a provider renders around each tool schema
# The tool-use instructions a provider adds once when tools are offered (Anthropic
# documents 264-530 tokens by model and tool choice).
TOKENS_FOR_TOOL_USE = 600
TOKENS_PER_EMBEDDING_INPUT = 2
# An image part: Qwen-VL with vl_high_resolution_images tops out at 16384 tokens;
# gpt-4o high detail at 1445, the gpt-4.1 mini/nano patch models below 4000.
IMAGE_TOKENS = 16_384
# gpt-4o-mini bills images at ~33x gpt-4o's token count (2833 + 5667 per 512px tile,
# at most 8 tiles), so its allowance is larger. Matched by prefix like prices.
_IMAGE_TOKENS_BY_MODEL: dict[str, int] = {"gpt-4o-mini": 48_169}


def _p(inp: str, out: str) -> ModelPrice:
    return ModelPrice(input_per_1m=Decimal(inp), output_per_1m=Decimal(out))


# Built-in list prices, USD per 1M tokens, standard (non-batch, uncached) tier, as
# published by OpenAI, Anthropic and Alibaba Cloud Model Studio (international /
# Singapore) around 2025-11. A provider's `pricing` in the config overrides any entry
# here; check the providers' pricing pages before relying on these for real budgets.
# DashScope tiered models are listed at their lowest context tier; thinking-mode
# output (qwen-plus: $4/1M) is dearer than listed: set `pricing` if you enable it.
BUILTIN_PRICES: dict[str, ModelPrice] = {
    # OpenAI chat / reasoning
    "gpt-5": _p("1.25", "10"),
    "gpt-5-mini": _p("0.25", "2"),
    "gpt-5-nano": _p("0.05", "0.4"),
    "gpt-5-chat-latest": _p("1.25", "10"),
    "gpt-4.1": _p("2", "8"),
    "gpt-4.1-mini": _p("0.4", "1.6"),
    "gpt-4.1-nano": _p("0.1", "0.4"),
    "gpt-4o": _p("2.5", "10"),
    "gpt-4o-2024-05-13": _p("5", "15"),
    "gpt-4o-mini": _p("0.15", "0.6"),
    "chatgpt-4o-latest": _p("5", "15"),
    "gpt-4-turbo": _p("10", "30"),
    "gpt-4": _p("30", "60"),
    "gpt-3.5-turbo": _p("0.5", "1.5"),
    "o1": _p("15", "60"),
    "o1-pro": _p("150", "600"),
    "o1-mini": _p("1.1", "4.4"),
    "o3": _p("2", "8"),
    "o3-pro": _p("20", "80"),
    "o3-mini": _p("1.1", "4.4"),
    "o4-mini": _p("1.1", "4.4"),
    # OpenAI embeddings (no output tokens)
    "text-embedding-3-small": _p("0.02", "0"),
    "text-embedding-3-large": _p("0.13", "0"),
    "text-embedding-ada-002": _p("0.1", "0"),
    # Anthropic (Claude API); prompt-cache reads and writes are billed as input here
    "claude-opus-4-5": _p("5", "25"),
    "claude-opus-4-1": _p("15", "75"),
    "claude-opus-4-0": _p("15", "75"),
    "claude-opus-4": _p("15", "75"),
    "claude-sonnet-4-5": _p("3", "15"),
    "claude-sonnet-4-0": _p("3", "15"),
    "claude-sonnet-4": _p("3", "15"),
    "claude-3-7-sonnet": _p("3", "15"),
    "claude-haiku-4-5": _p("1", "5"),
    "claude-3-5-haiku": _p("0.8", "4"),
    "claude-3-haiku": _p("0.25", "1.25"),
    # DashScope (Alibaba Cloud Model Studio, international)
    "qwen-max": _p("1.6", "6.4"),
    "qwen3-max": _p("1.2", "6"),
    "qwen-plus": _p("0.4", "1.2"),
    "qwen-turbo": _p("0.05", "0.2"),
    "qwen-flash": _p("0.05", "0.4"),
    "qwen-vl-max": _p("0.8", "3.2"),
    "qwen-vl-plus": _p("0.21", "0.63"),
    "qwen3-vl-plus": _p("0.2", "1.6"),
    "qwen3-vl-flash": _p("0.05", "0.4"),
    "qwen3-vl-30b-a3b-instruct": _p("0.2", "0.8"),
    "qwen3-vl-30b-a3b-thinking": _p("0.2", "2.4"),
    "qwen3-vl-235b-a22b-instruct": _p("0.4", "1.6"),
    "qwen3-vl-235b-a22b-thinking": _p("0.4", "4"),
    "text-embedding-v3": _p("0.07", "0"),
    "text-embedding-v4": _p("0.07", "0"),
}

# What may follow a table name in a snapshot name: dates and version tags only, so
# "gpt-4o-2024-08-06" is gpt-4o but "gpt-4.5-preview" is not gpt-4 (unknown instead).
_SNAPSHOT_SUFFIX = re.compile(r"(?:-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest|preview))+")


@lru_cache(maxsize=1024)
def builtin_price(model: str) -> ModelPrice | None:
    """The built-in price of a model: exact name, else the longest table name of
    which ``model`` is a dated/tagged snapshot."""
    price = BUILTIN_PRICES.get(model)
    if price is not None:
        return price
    best = ""
    for name in BUILTIN_PRICES:
        if (
            len(name) > len(best)
            and model.startswith(name)
            and _SNAPSHOT_SUFFIX.fullmatch(model, len(name))
        ):
            best = name
    return BUILTIN_PRICES[best] if best else None


def price_for(provider: ProviderSpec, model: str) -> ModelPrice | None:
    """Price of ``model`` on ``provider``; ``None`` means unknown (see the router).

    Local providers cost nothing; paid ones are looked up by ``listed_price``.
    """
    if provider.is_local:
        return ZERO_PRICE
    return listed_price(provider, model)


def listed_price(provider: ProviderSpec, model: str) -> ModelPrice | None:
    """The provider's ``pricing`` (exact name, then a snapshot of a priced name), then
    the built-in table; locality is not considered."""
    configured = provider.pricing
    if configured:
        price = configured.get(model)
        if price is not None:
            return price
        for name in sorted(configured, key=len, reverse=True):
            if model.startswith(name) and _SNAPSHOT_SUFFIX.fullmatch(model, len(name)):
                return configured[name]
    return builtin_price(model)


@lru_cache(maxsize=1024)
def image_tokens_for(model: str) -> int:
    """Prompt-token allowance for one image part sent to ``model``."""
    for name, tokens in _IMAGE_TOKENS_BY_MODEL.items():
        if model == name or (
            model.startswith(name) and _SNAPSHOT_SUFFIX.fullmatch(model, len(name))
        ):
            return tokens
    return IMAGE_TOKENS


def cost(price: ModelPrice, tokens_in: int, tokens_out: int) -> Decimal:
    """Settled cost in USD, rounded half-even to micro-dollars."""
    exact = (price.input_per_1m * tokens_in + price.output_per_1m * tokens_out) / ONE_MILLION
    return quantize_usd(exact, ROUND_HALF_EVEN)


def worst_case_cost(price: ModelPrice, prompt_bound: int, max_tokens: int) -> Decimal:
    """Reservation in USD for at most ``prompt_bound`` in and ``max_tokens`` out, rounded up."""
    exact = (price.input_per_1m * prompt_bound + price.output_per_1m * max_tokens) / ONE_MILLION
    return quantize_usd(exact, ROUND_CEILING)


def utf8_len(text: str) -> int:
    """UTF-8 byte length without encoding ASCII text (the common case)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def json_len(value: Any) -> int:
    """UTF-8 length of compact JSON: a bound for schemas a provider renders as text."""
    return utf8_len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def token_bound(
    text_bytes: int, messages: int, images: int, *, image_tokens: int = IMAGE_TOKENS
) -> int:
    """The prompt-token upper bound from pre-counted parts (see ``prompt_token_bound``)."""
    return TOKENS_PER_REQUEST + text_bytes + messages * TOKENS_PER_MESSAGE + images * image_tokens


def prompt_token_bound(body: Mapping[str, Any], *, image_tokens: int = IMAGE_TOKENS) -> int:
    """An upper bound on the prompt tokens of a chat or embeddings body.

    Counts the UTF-8 bytes of every text a provider tokenizes (message content,
    tool-call arguments, tool and response-format schemas as compact JSON, names),
    plus fixed allowances per message, tool and image part. Expects a body that
    ``facts.build_facts`` accepted; unknown shapes are counted as their JSON.
    """
    if "messages" not in body:
        return _embedding_bound(body.get("input"))
    text_bytes, images = 0, 0
    messages = body.get("messages") or []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            text_bytes += utf8_len(content)
        elif isinstance(content, list):
            for part in content:
                kind = part.get("type")
                if kind == "image_url":
                    images += 1
                elif kind in ("text", "refusal") and isinstance(part.get(kind), str):
                    text_bytes += utf8_len(part[kind])
                else:
                    text_bytes += json_len(part)
        for key in ("name", "tool_call_id"):
            if isinstance(message.get(key), str):
                text_bytes += utf8_len(message[key])
        if message.get("tool_calls"):
            text_bytes += json_len(message["tool_calls"])
    text_bytes += extras_bytes(body)
    return token_bound(text_bytes, len(messages), images, image_tokens=image_tokens)


def extras_bytes(body: Mapping[str, Any]) -> int:
    """Prompt bytes outside the messages: tool schemas (and the provider's tool-use
    instructions) and a JSON response schema."""
    total = 0
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        total += json_len(tools) + TOKENS_PER_TOOL * len(tools) + TOKENS_FOR_TOOL_USE
    functions = body.get("functions")  # the legacy form of tools
    if isinstance(functions, list) and functions:
        total += json_len(functions) + TOKENS_PER_TOOL * len(functions) + TOKENS_FOR_TOOL_USE
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        total += json_len(response_format)
    return total


def _embedding_bound(data: Any) -> int:
    if isinstance(data, str):
        return utf8_len(data) + TOKENS_PER_EMBEDDING_INPUT
    if not isinstance(data, list):
        return 0
    if all(isinstance(item, int) for item in data):  # one pre-tokenized input
        return len(data) + TOKENS_PER_EMBEDDING_INPUT
    total = 0
    for item in data:
        if isinstance(item, str):
            total += utf8_len(item) + TOKENS_PER_EMBEDDING_INPUT
        elif isinstance(item, list):  # pre-tokenized: one token per id
            total += len(item) + TOKENS_PER_EMBEDDING_INPUT
    return total
