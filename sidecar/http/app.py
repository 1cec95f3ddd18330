"""The sidecar's HTTP face: OpenAI-compatible endpoints, health and metrics.

Handlers only parse and answer; deciding and calling live in
:mod:`aegis.sidecar.exchange`. Every error leaves as OpenAI's error JSON with a
precise message, whatever raised it, and never as a stack trace.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import AegisError, BadRequest, InternalError, UnknownPath
from ..exchange import begin, complete
from ..request import Kind
from ..routing import model_catalog
from ..runtime import Runtime
from .openai_errors import error_response, from_http_exception
from .relay import relay

log = logging.getLogger(__name__)

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)


async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into OpenAI's error JSON; unexpected ones into a bare 500."""
    try:
        return await handler(request)
    except AegisError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(from_http_exception(exc, request.app[MAX_BODY]))
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(InternalError("internal error in the Aegis sidecar"))


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        raise BadRequest("request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return body


async def _serve(request: web.Request, kind: Kind) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    body = await read_json(request)
    snapshot = runtime.current  # the one config this request sees, whatever reloads
    runtime.metrics.inflight.inc()
    try:
        exchange = begin(runtime, snapshot, kind, body, request.headers)
        if kind == "chat" and exchange.facts.stream:
            return await relay(request, exchange)
        payload, headers, status = await complete(exchange, kind)
        return web.Response(body=payload, status=status, headers=headers)
    finally:
        runtime.metrics.inflight.dec()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "chat")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "embeddings")


async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    created = int(runtime.current.loaded_at.timestamp())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "aegis"}
        for name in model_catalog(runtime.current.config)
    ]
    return web.json_response({"object": "list", "data": data})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    state = runtime.reload_state
    detail: dict[str, Any] = {
        "ready": runtime.ready,
        "config": {
            "hash": runtime.current.hash,
            "route": runtime.current.config.identity.route,
            "loadedAt": runtime.current.loaded_at.isoformat(),
            "lastReloadError": state.last_error,
            "lastReloadErrorAt": state.last_error_at.isoformat() if state.last_error_at else None,
            "restartRequired": state.restart_required,
        },
        "ledger": {"pendingRows": runtime.ledger.pending},
    }
    return web.json_response(detail, status=200 if runtime.ready else 503)


async def not_found(request: web.Request) -> web.Response:
    return error_response(UnknownPath(f"unknown path {request.method} {request.path}"))


def guarded(handler: Handler) -> Handler:
    """``handler`` with :func:`openai_errors` around it.

    Applied per route rather than as an aiohttp middleware: a middleware costs every
    request two more coroutine layers and a cached-chain lookup. Every path is routed
    (the catch-all answers 404), so no request reaches a handler unguarded."""

    async def guarded_handler(request: web.Request) -> web.StreamResponse:
        return await openai_errors(request, handler)

    return guarded_handler


def build_app(runtime: Runtime) -> web.Application:
    """The API application (served on the loopback address only)."""
    max_body = runtime.current.config.listen.max_body_bytes
    app = web.Application(client_max_size=max_body)
    app[RUNTIME] = runtime
    app[MAX_BODY] = max_body
    app.router.add_post("/v1/chat/completions", guarded(chat_completions))
    app.router.add_post("/v1/embeddings", guarded(embeddings))
    app.router.add_get("/v1/models", guarded(list_models))
    app.router.add_get("/healthz", guarded(healthz))
    app.router.add_get("/readyz", guarded(readyz))
    app.router.add_route("*", "/{tail:.*}", guarded(not_found))
    return app


def build_metrics_app(runtime: Runtime) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        runtime.refresh_budget_metrics()
        payload = generate_latest(runtime.metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
