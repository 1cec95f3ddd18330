"""Adapter for every provider reached through ``any-llm-sdk`` (type ``any-llm``).

Measured costs decide the shape: ``import any_llm`` takes about a second
and 70 MiB, so it happens only when a config has such a provider (at registry
build); a client costs ~25 ms to create and leaks when made per call, so one
client per (sdkProvider, key, baseURL) is built once, shared by every adapter that
needs it (also across config reloads) and closed when the last user goes.

Clients are created with ``unified_exceptions=True`` (any-llm maps every SDK's
errors onto ``AnyLLMError`` subclasses with ``status_code`` and ``retry_after``)
and ``max_retries=0`` (the router owns retries; a provider whose SDK has no retry
setting is created without it). The SDK's answers are pydantic models in the
OpenAI shape; they are serialised once into the bytes the sidecar forwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..contract import ProviderSpec
from .base import (
    MODEL_FALLBACK_STATUSES,
    ErrorKind,
    StreamHandle,
    UpstreamCall,
    UpstreamError,
    UpstreamResult,
    Usage,
    parse_retry_after,
)
from .openai_wire import read_api_key

log = logging.getLogger(__name__)

# Fields the sidecar itself fills in (the model, the messages, streaming).
_DROP = frozenset({"model", "messages", "stream", "stream_options"})
#: The request fields that may reach any-llm, whose calls carry the platform's key:
#: the OpenAI chat parameters it maps for every provider. Anything else would become
#: an SDK keyword argument (extra_headers, extra_body, api_key, api_base, client,
#: timeout, service_tier ...) and is refused with a 400 naming it, as OpenAI does.
CHAT_FIELDS = frozenset(
    {
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "n",
        "parallel_tool_calls",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "seed",
        "stop",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
    }
)
EMBEDDING_FIELDS = frozenset({"dimensions", "encoding_format", "user"})


@dataclass(slots=True)
class _Entry:
    client: Any
    refs: int


class AnyLLMClients:
    """The process's any-llm clients, one per (provider, key, base URL)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str], _Entry] = {}

    @staticmethod
    def key_for(spec: ProviderSpec, api_key: str | None) -> tuple[str, str, str]:
        digest = hashlib.sha256((api_key or "").encode()).hexdigest()[:16]
        return (spec.sdk_provider or "", digest, spec.base_url or "")

    def acquire(self, spec: ProviderSpec, api_key: str | None) -> tuple[tuple[str, str, str], Any]:
        key = self.key_for(spec, api_key)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(create_client(spec, api_key), 0)
            self._entries[key] = entry
        entry.refs += 1
        return key, entry.client

    async def release(self, key: tuple[str, str, str]) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.refs -= 1
        if entry.refs <= 0:
            del self._entries[key]
            await close_client(entry.client)

    async def aclose(self) -> None:
        entries, self._entries = self._entries, {}
        for entry in entries.values():
            await close_client(entry.client)

    def __len__(self) -> int:
        return len(self._entries)


def create_client(spec: ProviderSpec, api_key: str | None) -> Any:
    """``AnyLLM.create(...)`` with unified exceptions and no SDK retries (lazy import)."""
    any_llm = importlib.import_module("any_llm")
    exceptions = importlib.import_module("any_llm.exceptions")
    kwargs: dict[str, Any] = {
        "api_key": api_key,
        "api_base": spec.base_url,
        "unified_exceptions": True,
    }
    try:
        return any_llm.AnyLLM.create(spec.sdk_provider, max_retries=0, **kwargs)
    except exceptions.UnsupportedParameterError:
        log.info("provider %s: SDK has no retry setting; created without max_retries", spec.name)
        return any_llm.AnyLLM.create(spec.sdk_provider, **kwargs)


async def close_client(client: Any) -> None:
    """Close the SDK's HTTP client (any-llm has no close of its own)."""
    for attr in ("client", "_client"):
        inner = getattr(client, attr, None)
        closer = getattr(inner, "close", None) or getattr(inner, "aclose", None)
        if closer is None:
            continue
        try:
            result = closer()
            if inspect.isawaitable(result):
                await result
        except Exception:  # closing must never fail the shutdown
            log.debug("closing an any-llm client failed", exc_info=True)
        return


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        original = getattr(current, "original_exception", None)
        current = original or current.__cause__ or current.__context__
    return seen


def _sdk_message(exc: BaseException) -> str:
    for item in _chain(exc):
        body = getattr(item, "body", None)
        if isinstance(body, Mapping):
            err = body.get("error", body)
            if isinstance(err, Mapping) and err.get("message"):
                return str(err["message"])
    return str(getattr(exc, "message", None) or exc) or exc.__class__.__name__


def map_error(
    exc: BaseException, *, provider: str, model: str, partial: bool = False
) -> UpstreamError:
    """An any-llm (or SDK / asyncio) failure as an ``UpstreamError``."""
    if isinstance(exc, UpstreamError):
        return exc
    status = getattr(exc, "status_code", None)
    names = " ".join(type(e).__name__ for e in _chain(exc))
    if not isinstance(status, int):
        status = None
    if status is not None:
        kind = ErrorKind.STATUS
    elif isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or "Timeout" in names:
        kind = ErrorKind.TIMEOUT
    elif "MissingApiKey" in names or "UnsupportedParameter" in names or "ImportError" in names:
        kind = ErrorKind.CONFIG
    elif "Connect" in names or "Connection" in names or "ProviderError" in names:
        kind = ErrorKind.CONNECT
    else:
        kind = ErrorKind.PROTOCOL
    retry_after = None
    raw_retry = getattr(exc, "retry_after", None)
    if raw_retry:
        retry_after = parse_retry_after({"retry-after": str(raw_retry)})
    retriable: bool | None = False if partial else None
    if kind is ErrorKind.CONFIG:
        retriable = False
    code = getattr(exc, "code", None)
    return UpstreamError(
        kind,
        _sdk_message(exc),
        status=status,
        retry_after=retry_after,
        code=str(code) if code else None,
        provider=provider,
        model=model,
        partial=partial,
        retriable=retriable,
    )


def allowed_fields(
    body: Mapping[str, Any], allowed: frozenset[str], *, provider: str, model: str
) -> dict[str, Any]:
    """The body's fields any-llm may receive; a 400 (the client's fault, not retried
    elsewhere) naming any other."""
    unknown = sorted(set(body) - allowed - _DROP - {"input"})
    if unknown:
        raise UpstreamError(
            ErrorKind.STATUS,
            f"Unrecognized request argument supplied: {', '.join(unknown)}",
            status=400,
            code="unknown_parameter",
            provider=provider,
            model=model,
            retriable=False,
        )
    return {k: v for k, v in body.items() if k in allowed}


def _params(call: UpstreamCall, provider: str) -> dict[str, Any]:
    params = allowed_fields(call.body, CHAT_FIELDS, provider=provider, model=call.models[0])
    if (
        call.max_tokens is not None
        and "max_tokens" not in params
        and "max_completion_tokens" not in params
    ):
        params["max_tokens"] = call.max_tokens
    return params


def _usage(value: Any) -> Usage | None:
    if value is None:
        return None
    prompt = getattr(value, "prompt_tokens", None)
    completion = getattr(value, "completion_tokens", None)
    return Usage.checked(prompt, completion)


class AnyLLMAdapter:
    """One ``type: any-llm`` provider on a shared any-llm client."""

    def __init__(
        self, spec: ProviderSpec, pool: AnyLLMClients, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.provider = spec.name
        self.spec = spec
        self._pool = pool
        self._timeout = spec.timeout_seconds
        self._pool_key: tuple[str, str, str] | None = None
        self._client: Any = None
        self._broken: str | None = None
        try:
            self._pool_key, self._client = pool.acquire(spec, read_api_key(spec, env))
        except Exception as exc:  # the sidecar must start; calls report the reason
            self._broken = f"{type(exc).__name__}: {map_error(exc, provider='', model='').message}"
            log.error("provider %s: any-llm client unavailable (%s)", spec.name, self._broken)
        self._per_request_timeout = (
            getattr(self._client, "TIMEOUT_SUPPORT", "unsupported") != "unsupported"
        )

    def _check(self, model: str) -> Any:
        if self._client is None:
            raise UpstreamError(
                ErrorKind.CONFIG,
                self._broken or "any-llm client unavailable",
                provider=self.provider,
                model=model,
                retriable=False,
            )
        return self._client

    def _kwargs(self, call: UpstreamCall) -> dict[str, Any]:
        params = _params(call, self.provider)
        if self._per_request_timeout:
            params["timeout"] = self._timeout
        return params

    async def chat(self, call: UpstreamCall) -> UpstreamResult:
        messages = call.body.get("messages") or []
        last = len(call.models) - 1
        for i, model in enumerate(call.models):
            client = self._check(model)
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._timeout + 1.0):
                    result = await client.acompletion(
                        model=model, messages=messages, stream=False, **self._kwargs(call)
                    )
            except Exception as exc:
                error = map_error(exc, provider=self.provider, model=model)
                if error.status in MODEL_FALLBACK_STATUSES and i < last:
                    continue
                raise error from None
            return UpstreamResult(
                status=200,
                body=result.model_dump_json(exclude_none=True).encode(),
                model=model,
                usage=_usage(getattr(result, "usage", None)),
                latency_s=time.monotonic() - started,
            )
        raise AssertionError("unreachable: UpstreamCall.models is never empty")

    async def embeddings(self, call: UpstreamCall) -> UpstreamResult:
        model = call.models[0]
        client = self._check(model)
        params = allowed_fields(call.body, EMBEDDING_FIELDS, provider=self.provider, model=model)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout + 1.0):
                result = await client.aembedding(model, call.body.get("input", ""), **params)
        except Exception as exc:
            raise map_error(exc, provider=self.provider, model=model) from None
        usage = getattr(result, "usage", None)
        prompt = getattr(usage, "prompt_tokens", None)
        return UpstreamResult(
            status=200,
            body=result.model_dump_json(exclude_none=True).encode(),
            model=model,
            usage=Usage.checked(prompt, 0),
            latency_s=time.monotonic() - started,
        )

    def chat_stream(self, call: UpstreamCall) -> StreamHandle:
        return AnyLLMStream(self, call)

    async def aclose(self) -> None:
        key, self._pool_key = self._pool_key, None
        if key is not None:
            await self._pool.release(key)


class AnyLLMStream:
    """A streamed completion through any-llm, re-emitted as OpenAI SSE bytes."""

    def __init__(self, adapter: AnyLLMAdapter, call: UpstreamCall) -> None:
        self._adapter = adapter
        self._call = call
        self._model = call.models[0]
        self._iterator: Any = None
        self._usage: Usage | None = None
        self._ttfb: float | None = None
        self._started = 0.0

    @property
    def model(self) -> str:
        return self._model

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @property
    def ttfb_s(self) -> float | None:
        return self._ttfb

    async def start(self) -> None:
        adapter, call = self._adapter, self._call
        messages = call.body.get("messages") or []
        last = len(call.models) - 1
        for i, model in enumerate(call.models):
            self._model = model
            client = adapter._check(model)
            self._started = time.monotonic()
            try:
                async with asyncio.timeout(adapter._timeout + 1.0):
                    self._iterator = await client.acompletion(
                        model=model,
                        messages=messages,
                        stream=True,
                        stream_options={"include_usage": True},
                        **adapter._kwargs(call),
                    )
                return
            except Exception as exc:
                error = map_error(exc, provider=adapter.provider, model=model)
                if error.status in MODEL_FALLBACK_STATUSES and i < last:
                    continue
                raise error from None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        iterator = self._iterator
        if iterator is None:
            raise RuntimeError("AnyLLMStream.start() must succeed before iteration")
        keep_usage = self._call.client_wants_usage
        sent = False
        try:
            while True:
                try:
                    async with asyncio.timeout(self._adapter._timeout):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                if self._ttfb is None:
                    self._ttfb = time.monotonic() - self._started
                usage = _usage(getattr(chunk, "usage", None))
                if usage is not None:
                    self._usage = usage
                    if not chunk.choices and not keep_usage:
                        continue
                sent = True
                yield b"data: " + chunk.model_dump_json(exclude_none=True).encode() + b"\n\n"
        except Exception as exc:
            raise map_error(
                exc, provider=self._adapter.provider, model=self._model, partial=sent
            ) from None
        finally:
            await self.aclose()
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        iterator, self._iterator = self._iterator, None
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception:
                log.debug("closing an any-llm stream failed", exc_info=True)
