"""A fake provider's own bill: every call it answered, per API key, priced by the
``prices`` knob (USD per million input and output tokens, per model).

A provider bills a call once it has produced the answer, whether or not the caller
is still there to read it: a call is billed when the fake decides to answer it (after
its latency and injected failures, before the first byte goes out), so a gateway
killed while the answer was on its way still pays for it. The bill is the provider's
own arithmetic over the usage it reports (``(input * in + output * out) / 10^6``,
rounded half-even to micro-dollars), independent of the gateway's ledger: what a test
compares the ledger with. ``GET /_fake/invoice`` returns it; a reset clears it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from aiohttp import web

MICRO = Decimal("0.000001")
MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Call:
    """One billed call."""

    id: str  # the answer's id (``chatcmpl-fake…``), as the client sees it
    key: str  # the API key it was made with ("" without one)
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    tag: str | None  # the request's ``user`` field (a caller's own id for the call)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "model": self.model,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "costUSD": str(self.cost_usd),
            "tag": self.tag,
        }


def price(prices: dict[str, Any] | None, model: str) -> tuple[Decimal, Decimal]:
    """(input, output) USD per million tokens of ``model``; unpriced models are free."""
    entry = (prices or {}).get(model)
    if not isinstance(entry, dict):
        return Decimal(0), Decimal(0)
    return Decimal(str(entry.get("inputPer1M", 0))), Decimal(str(entry.get("outputPer1M", 0)))


def api_key(request: web.Request) -> str:
    """The caller's key: ``Authorization: Bearer <key>`` or Anthropic's ``x-api-key``."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key", "")


class Invoice:
    """Every call billed, in order, and the totals per key."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def bill(
        self,
        request: web.Request,
        prices: dict[str, Any] | None,
        *,
        call_id: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        tag: Any = None,
    ) -> Call:
        per_in, per_out = price(prices, model)
        exact = (per_in * input_tokens + per_out * output_tokens) / MILLION
        call = Call(
            id=call_id,
            key=api_key(request),
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=exact.quantize(MICRO, rounding=ROUND_HALF_EVEN),
            tag=tag if isinstance(tag, str) else None,
        )
        self.calls.append(call)
        return call

    def clear(self) -> None:
        self.calls.clear()

    def by_key(self) -> dict[str, dict[str, Any]]:
        """Per key: calls, tokens and cost (a string, exact)."""
        totals: dict[str, dict[str, Any]] = {}
        for call in self.calls:
            entry = totals.setdefault(
                call.key, {"calls": 0, "inputTokens": 0, "outputTokens": 0, "costUSD": Decimal(0)}
            )
            entry["calls"] += 1
            entry["inputTokens"] += call.input_tokens
            entry["outputTokens"] += call.output_tokens
            entry["costUSD"] += call.cost_usd
        for entry in totals.values():
            entry["costUSD"] = str(entry["costUSD"])
        return totals

    def to_json(self) -> dict[str, Any]:
        return {"keys": self.by_key(), "calls": [c.to_json() for c in self.calls]}
