"""Taking a request in: its facts and its route, under one config snapshot."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from ..errors import AegisError, BadRequest, NoProviderAvailable, PrivacyNoLocalProvider
from ..ledger import Status
from ..request import HEADER_USER, Headers, Kind, PrivacyAction, build_facts, local_action
from ..routing import REASON_PRIVACY, REASON_TARGET, RouteDecision, choose_arm, route
from ..routing.router import SKIP_NO_MODEL
from ..runtime import RequestTrace, Runtime, Snapshot
from .record import Exchange


def begin(
    runtime: Runtime,
    snapshot: Snapshot,
    kind: Kind,
    body: Mapping[str, Any],
    headers: Headers | Mapping[str, str],
    *,
    original: Mapping[str, Any] | None = None,
) -> Exchange:
    """Validate and route a parsed request under one config ``snapshot``; raises
    ``BadRequest`` for bad input and the router's refusal when there is one.

    The facts (data class, sticky key) and the route come from the same snapshot,
    which the caller took once for the whole request: a hot reload landing
    meanwhile must not judge the data under one config and route it under another.
    ``body`` is the internal (chat or embeddings) form; ``original`` the client's
    body when that came in another API's shape: privacy reads it.
    """
    if runtime.tracer is None:
        return _begin(runtime, snapshot, kind, body, headers, original=original, trace=None)
    trace = runtime.tracer.start(kind, headers)  # the app's traceparent is its parent
    try:
        return _begin(runtime, snapshot, kind, body, headers, original=original, trace=trace)
    except BaseException as error:
        trace.abandon(error)  # a no-op once the outcome was recorded
        raise


def _begin(
    runtime: Runtime,
    snapshot: Snapshot,
    kind: Kind,
    body: Mapping[str, Any],
    headers: Headers | Mapping[str, str],
    *,
    original: Mapping[str, Any] | None,
    trace: RequestTrace | None,
) -> Exchange:
    config = snapshot.config
    sticky = config.rollout.stickiness.header if config.rollout else HEADER_USER
    facts = build_facts(
        kind, body, headers, config.privacy, sticky_header=sticky, original=original
    )
    if facts.has_images and kind == "chat":
        _images_in_system(body)
    arm = choose_arm(config.rollout, facts.user_key, random.random(), route=config.identity.route)
    decision = route(facts, config, runtime.budgets, runtime.adapters, arm)
    exchange = Exchange(runtime, snapshot, facts, decision, body, trace=trace)
    if trace is not None:
        trace.routed(facts, decision, config.identity.route)
    m = runtime.metrics
    for detected in facts.detected:
        m.pii_detections.labels(detected).inc()
    kept = local_action(facts.declared_class, facts.data_class, config.privacy)
    if kept is not PrivacyAction.NONE:
        m.privacy.labels(facts.data_class, kept).inc()
    if decision.refusal is not None:
        refusal = _no_vision(decision, body) if facts.has_images else decision.refusal
        if isinstance(refusal, PrivacyNoLocalProvider):
            exchange.blocked = True
            m.privacy.labels(facts.data_class, PrivacyAction.BLOCKED).inc()
        m.refusals.labels(refusal.code).inc()
        exchange.record(candidate=None, model="", status=Status.REFUSED, http_status=refusal.status)
        raise refusal.with_headers(exchange.headers(None, None))
    # The target is considered first; when it was passed over, say why. Skips of
    # later fallback entries did not change the answer and are not reported.
    if decision.candidates[0].reason != REASON_TARGET and decision.skipped:
        provider, reason = decision.skipped[0]
        exchange.fallbacks.append(f"{provider}:{reason}")
        if reason == REASON_PRIVACY:
            m.privacy.labels(facts.data_class, "rerouted").inc()
    return exchange


_SYSTEM_ROLES = ("system", "developer")


def _image_parts(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field path, role) of every image part of a chat body (already validated)."""
    found: list[tuple[str, str]] = []
    for i, message in enumerate(body.get("messages") or ()):
        content = message.get("content")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if part.get("type") == "image_url":
                found.append((f"messages[{i}].content[{j}]", str(message.get("role"))))
    return found


def _images_in_system(body: Mapping[str, Any]) -> None:
    """System (and developer) messages hold text only, as in OpenAI's API."""
    for where, role in _image_parts(body):
        if role in _SYSTEM_ROLES:
            raise BadRequest(
                f"Invalid '{where}.type': a {role} message takes text parts only; "
                "send images in a user message.",
                param=f"{where}.type",
                code="invalid_value",
            )


def _no_vision(decision: RouteDecision, body: Mapping[str, Any]) -> AegisError:
    """Image input on a route none of whose providers has a vision model is the
    client's to change (400 naming the image part), not a provider outage (503)."""
    refusal = decision.refusal
    assert refusal is not None
    if not isinstance(refusal, NoProviderAvailable) or any(
        reason != SKIP_NO_MODEL for _, reason in decision.skipped
    ):
        return refusal
    parts = _image_parts(body)
    where = parts[0][0] if parts else "messages"
    return BadRequest(
        f"Invalid '{where}': this route has no model that takes image input (no provider "
        "lists vision models); send text only, or ask for a vision model on the route.",
        param=where,
        code="image_input_unsupported",
    )
