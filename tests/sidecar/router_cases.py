"""The router tests' shared cases: the example config, request facts and a decision
under given budgets, open circuits and arm."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from multidict import CIMultiDict

from aegis.sidecar.contract import Arm, SidecarConfig, decode
from aegis.sidecar.request.facts import RequestFacts, build_facts
from aegis.sidecar.routing import RouteDecision, StaticBudgetView, StaticHealth, route

EXAMPLE = Path(__file__).resolve().parents[2] / "sidecar" / "examples" / "standalone.yaml"


def example_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


def config_from(doc: dict[str, Any]) -> SidecarConfig:
    return decode(SidecarConfig, doc)


def make_facts(
    config: SidecarConfig,
    content: Any = "hello",
    headers: dict[str, str] | None = None,
    *,
    kind: str = "chat",
    **body: Any,
) -> RequestFacts:
    if kind == "chat":
        payload: dict[str, Any] = {"messages": [{"role": "user", "content": content}], **body}
        return build_facts("chat", payload, CIMultiDict(headers or {}), config.privacy)
    return build_facts(
        "embeddings", {"input": content, **body}, CIMultiDict(headers or {}), config.privacy
    )


def decide(
    config: SidecarConfig,
    facts: RequestFacts,
    *,
    remaining: dict[str, Decimal] | None = None,
    open_circuits: tuple[str, ...] = (),
    arm: str = "stable",
) -> RouteDecision:
    return route(
        facts,
        config,
        StaticBudgetView(config.budgets, remaining),
        StaticHealth(open_circuits),
        Arm.CANDIDATE if arm == "candidate" else Arm.STABLE,
    )


def names(decision: RouteDecision) -> list[str]:
    return [c.provider.name for c in decision.candidates]


IMAGE = [
    {"type": "text", "text": "what is in the picture?"},
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
]
