"""The sidecar's HTTP face: the OpenAI and Anthropic endpoints, health and metrics.

Handlers only parse and answer: the front ends translate each API's body into the
internal request and its answer back (:mod:`aegis.sidecar.frontends`); deciding
and calling live in :mod:`aegis.sidecar.exchange`. Every error leaves in the
endpoint's own error shape (OpenAI's, or Anthropic's on ``/v1/messages``) with a
precise message, whatever raised it, and never as a stack trace: 404 for an
unknown path, 405 with ``Allow`` for a known path and the wrong method, 413 for a
body over the limit, 415 for a body that is not JSON.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..contract import LimitsSpec
from ..errors import (
    AegisError,
    BadRequest,
    ClientError,
    InternalError,
    UnknownPath,
    UpstreamBadGateway,
)
from ..exchange import begin, complete
from ..frontends import Api, ErrorShape, answer, translate
from ..limits.headers import for_shape
from ..routing import model_catalog
from ..runtime import Runtime
from .bounds import Gate, check_headers, read_json
from .error_bodies import error_response, from_http_exception
from .relay import relay

log = logging.getLogger(__name__)

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)
LIMITS: web.AppKey[LimitsSpec] = web.AppKey("limits", LimitsSpec)
GATE: web.AppKey[Gate] = web.AppKey("gate", Gate)

ANTHROPIC_VERSIONS = ("2023-06-01", "2023-01-01")
"""``anthropic-version`` values the Messages endpoint accepts (absent = the first)."""
# The paths whose errors (404/405 included) take Anthropic's shape.
_ANTHROPIC_PREFIX = "/v1/messages"


async def answer_errors(
    request: web.Request, handler: Handler, shape: ErrorShape
) -> web.StreamResponse:
    """Turn every failure into the endpoint's error JSON; unexpected ones into a bare 500."""
    if request.path.startswith(_ANTHROPIC_PREFIX):  # the catch-all's too
        shape = "anthropic"
    try:
        check_headers(request, request.app[LIMITS])
        return await handler(request)
    except AegisError as exc:
        return error_response(exc, shape)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(from_http_exception(exc, request.app[MAX_BODY]), shape)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(InternalError("internal error in the Aegis sidecar"), shape)


def check_anthropic_version(request: web.Request) -> None:
    value = request.headers.get("anthropic-version")
    if value is not None and value.strip() not in ANTHROPIC_VERSIONS:
        raise BadRequest(
            f"anthropic-version: unsupported version {value.strip()[:40]!r}; "
            f"expected one of: {', '.join(ANTHROPIC_VERSIONS)}",
            param="anthropic-version",
            code="invalid_header",
        )


async def _serve(request: web.Request, api: Api) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    gate = request.app[GATE]
    try:
        gate.enter()
    except ClientError as refusal:  # over the concurrency cap: counted, never queued
        runtime.metrics.refusals.labels(refusal.code).inc()
        raise
    try:
        return await _served(request, api, runtime)
    finally:
        gate.leave()


async def _served(request: web.Request, api: Api, runtime: Runtime) -> web.StreamResponse:
    body = await read_json(request, request.app[MAX_BODY], request.app[LIMITS], api)
    if api is Api.MESSAGES:
        check_anthropic_version(request)
    translated = translate(api, body)
    snapshot = runtime.current  # the one config this request sees, whatever reloads
    runtime.metrics.inflight.inc()
    try:
        exchange = begin(
            runtime,
            snapshot,
            api.kind,
            translated.body,
            request.headers,
            original=body if api.translated else None,
        )
        if api.kind == "chat" and exchange.facts.stream:
            limits = request.app[LIMITS]
            loop = asyncio.get_running_loop()
            return await relay(
                request,
                exchange,
                translated,
                client_timeout=limits.client_timeout_seconds,
                deadline=loop.time()
                + limits.request_timeout_seconds
                - exchange.elapsed_ms() / 1000,
            )
        payload, headers, status = await complete(exchange, api.kind)
        if exchange.rate_states:  # both rate-limit families: keep this API's
            headers = for_shape(headers, api.error_shape == "anthropic")
        if api.translated:
            try:
                payload = answer(translated, payload, exchange.request_id)
            except (ValueError, RecursionError):
                raise UpstreamBadGateway(
                    "the provider's answer is not a chat completion",
                    headers=exchange.headers(None, None),
                ) from None
            headers["Content-Type"] = "application/json"
        if len(payload) > _BUFFERED_BYTES:
            return await send_bounded(request, payload, status, headers)
        return web.Response(body=payload, status=status, headers=headers)
    finally:
        runtime.metrics.inflight.dec()


# Up to this size an answer fits the transport's write buffer and is handed over at
# once; a larger one is written under the client timeout (a client that does not
# read must not hold the connection's task forever).
_BUFFERED_BYTES = 64 * 1024


async def send_bounded(
    request: web.Request, payload: bytes, status: int, headers: dict[str, str]
) -> web.StreamResponse:
    """``payload`` written within ``clientTimeoutSeconds``, else the client dropped."""
    timeout = request.app[LIMITS].client_timeout_seconds
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(payload)
    try:
        async with asyncio.timeout(timeout):
            await response.prepare(request)
            await response.write(payload)
            await response.write_eof()
    except TimeoutError:
        log.info("dropped a client that did not read its answer within %.0f s", timeout)
        if request.transport is not None:
            request.transport.abort()
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, Api.CHAT)


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _serve(request, Api.EMBEDDINGS)


async def responses(request: web.Request) -> web.StreamResponse:
    return await _serve(request, Api.RESPONSES)


async def messages(request: web.Request) -> web.StreamResponse:
    return await _serve(request, Api.MESSAGES)


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


async def unrouted(request: web.Request) -> web.Response:
    """The catch-all: 405 with ``Allow`` when another route serves the path with
    other methods (aiohttp's own answer, which a catch-all would swallow), else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is request.match_info.route.resource:
            continue
        _, methods = await resource.resolve(request)
        allowed |= methods
    shape: ErrorShape = "anthropic" if request.path.startswith(_ANTHROPIC_PREFIX) else "openai"
    if allowed:
        allow = ", ".join(sorted(allowed))
        error = ClientError(
            f"method {request.method} is not allowed on {request.path}; allowed: {allow}",
            status=405,
            code="method_not_allowed",
            headers={"Allow": allow},
        )
        return error_response(error, shape)
    return error_response(UnknownPath(f"unknown path {request.method} {request.path}"), shape)


def guarded(handler: Handler, shape: ErrorShape = "openai", api: Api | None = None) -> Handler:
    """``handler`` with :func:`answer_errors` around it, in ``shape``; a model route's
    answers are counted by ``api`` and status.

    Applied per route rather than as an aiohttp middleware: a middleware costs every
    request two more coroutine layers and a cached-chain lookup. Every path is routed
    (the catch-all answers 404/405), so no request reaches a handler unguarded."""
    if api is None:

        async def guarded_handler(request: web.Request) -> web.StreamResponse:
            return await answer_errors(request, handler, shape)

        return guarded_handler

    name = api.value

    async def counted_handler(request: web.Request) -> web.StreamResponse:
        response = await answer_errors(request, handler, shape)
        request.app[RUNTIME].metrics.api_counter(name, response.status).inc()
        return response

    return counted_handler


MODEL_ROUTES: dict[str, Api] = {
    "/v1/chat/completions": Api.CHAT,
    "/v1/embeddings": Api.EMBEDDINGS,
    "/v1/responses": Api.RESPONSES,
    "/v1/messages": Api.MESSAGES,
}
"""The routes that call a model, by path (each goes through privacy and budgets)."""
_HANDLERS: dict[Api, Handler] = {
    Api.CHAT: chat_completions,
    Api.EMBEDDINGS: embeddings,
    Api.RESPONSES: responses,
    Api.MESSAGES: messages,
}


def build_app(runtime: Runtime) -> web.Application:
    """The API application (served on the loopback address only)."""
    listen = runtime.current.config.listen
    max_body = listen.max_body_bytes
    app = web.Application(client_max_size=max_body)
    app[RUNTIME] = runtime
    app[MAX_BODY] = max_body
    app[LIMITS] = listen.limits
    app[GATE] = Gate(listen.limits.max_concurrent_requests)
    for path, api in MODEL_ROUTES.items():
        app.router.add_post(path, guarded(_HANDLERS[api], api.error_shape, api))
    app.router.add_get("/v1/models", guarded(list_models))
    app.router.add_get("/healthz", guarded(healthz))
    app.router.add_get("/readyz", guarded(readyz))
    app.router.add_route("*", "/{tail:.*}", guarded(unrouted))
    return app


def build_metrics_app(runtime: Runtime) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        runtime.refresh_budget_metrics()
        identity = runtime.current.config.identity
        payload = generate_latest(runtime.metrics.exposition(identity.namespace, identity.route))
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
