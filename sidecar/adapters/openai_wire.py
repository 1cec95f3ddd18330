"""The lean pass-through adapter for OpenAI-wire upstreams.

OpenAI, DashScope compatible mode, Ollama's ``/v1`` face and vLLM (type
``openai-compatible``) all speak the OpenAI chat-completions wire, so the sidecar
forwards the client's request with the few fields routing decides (``model``, a
token cap, ``stream_options.include_usage``, DashScope extras) and hands the
answer back byte for byte. Measured cost matters here (raw aiohttp takes about
0.2 ms CPU per call, an SDK client 1.3-1.6 ms), hence:

* one ``aiohttp.ClientSession`` for the whole process (:class:`SharedSession`),
  pooled keep-alive connections, per-provider ``ClientTimeout`` objects built once;
* the body is serialised exactly once; a non-stream answer is not re-serialised and
  its usage is read from the end of the body; stream chunks are forwarded as they
  arrive and only a chunk carrying ``usage`` is parsed.

Timeouts: ``timeoutSeconds`` bounds a whole non-stream call; for a stream it bounds
the wait for the headers, for the first event and every gap between events (a long
answer that keeps flowing is not cut; :mod:`.wire_stream`). ``connectTimeoutSeconds``
bounds the TCP/TLS connect.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import hdrs
from yarl import URL

from ..contract import ProviderSpec, ProviderType
from ..jsonbytes import compact_json
from .base import (
    MODEL_FALLBACK_STATUSES,
    ErrorKind,
    StreamHandle,
    UpstreamCall,
    UpstreamError,
    UpstreamResult,
)
from .wire import (
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    answer_problem,
    map_exception,
    status_error,
    usage_from_body,
)
from .wire_stream import WireStream

log = logging.getLogger(__name__)


_THINKING_ONLY_MARKERS = ("thinking", "qwq", "qvq")
USER_AGENT = "aegis-sidecar"  # not aiohttp's, which names the Python and aiohttp versions


class SharedSession:
    """The process-wide aiohttp session, created lazily inside the running loop."""

    def __init__(self, *, limit: int = 512, keepalive_timeout: float = 30.0) -> None:
        self._limit = limit
        self._keepalive = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=0,
                keepalive_timeout=self._keepalive,
                ttl_dns_cache=300,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                raise_for_status=False,
            )
            self._session = session
        return session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def api_root(spec: ProviderSpec) -> str:
    """The URL under which ``/chat/completions`` (Anthropic: ``/messages``) lives."""
    base = (spec.resolved_base_url or "").rstrip("/")
    if spec.type in (ProviderType.OLLAMA, ProviderType.ANTHROPIC) and not base.endswith("/v1"):
        base += "/v1"
    return base


def read_api_key(spec: ProviderSpec, env: Mapping[str, str] | None = None) -> str | None:
    if not spec.api_key_env:
        return None
    value = (os.environ if env is None else env).get(spec.api_key_env)
    if not value:
        log.warning(
            "provider %s: environment variable %s is not set; calling without a key",
            spec.name,
            spec.api_key_env,
        )
    return value or None


class OpenAIWireAdapter:
    """Pass-through adapter for one OpenAI-wire provider (see module docstring)."""

    chat_path = "/chat/completions"

    def __init__(
        self,
        spec: ProviderSpec,
        session: SharedSession,
        *,
        env: Mapping[str, str] | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.provider = spec.name
        self.spec = spec
        self._session = session
        self.max_event_bytes = max_event_bytes
        self.max_body_bytes = max_body_bytes
        root = api_root(spec)
        self._chat_url = URL(root + self.chat_path)
        self._embed_url = URL(root + "/embeddings")
        # A User-Agent of our own rather than skip_auto_headers=("User-Agent",) on the
        # session, which costs aiohttp a header copy per request (~5 us).
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        headers.update(self.key_headers(read_api_key(spec, env)))
        self._headers = headers
        self._stream_headers = {**headers, "Accept": "text/event-stream"}
        self._is_dashscope = spec.type is ProviderType.DASHSCOPE
        self._cap_field = (
            "max_completion_tokens" if spec.type is ProviderType.OPENAI else "max_tokens"
        )
        self._timeout = aiohttp.ClientTimeout(
            total=spec.timeout_seconds,
            connect=spec.connect_timeout_seconds,
            sock_connect=spec.connect_timeout_seconds,
        )
        # No sock_read: it re-arms a timer on every read; a stream's silences are
        # bounded by its WireStream (IdleWatch) instead.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=spec.connect_timeout_seconds,
            sock_connect=spec.connect_timeout_seconds,
        )

    # -- request building -------------------------------------------------------------

    def key_headers(self, key: str | None) -> dict[str, str]:
        """The headers that carry the API key (and the wire's version, if it has one)."""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def encode_chat(self, call: UpstreamCall, model: str, *, stream: bool) -> bytes:
        """The upstream body: the client's body plus routing's fields, serialised once."""
        body: dict[str, Any] = dict(call.body)
        body["model"] = model
        if stream:
            body["stream"] = True
            options = body.get("stream_options")
            if not (isinstance(options, Mapping) and options.get("include_usage") is True):
                merged = dict(options) if isinstance(options, Mapping) else {}
                merged["include_usage"] = True
                body["stream_options"] = merged
        else:
            if body.get("stream") is not None:
                body["stream"] = False
            body.pop("stream_options", None)
        if (
            self._cap_field == "max_tokens"
            and "max_tokens" not in body
            and "max_completion_tokens" in body
        ):
            # Only OpenAI reads max_completion_tokens; elsewhere the cap (which the
            # budget reservation relies on) must travel as max_tokens.
            body["max_tokens"] = body.pop("max_completion_tokens")
        if (
            call.max_tokens is not None
            and "max_tokens" not in body
            and "max_completion_tokens" not in body
        ):
            body[self._cap_field] = call.max_tokens
        if self._is_dashscope:
            if call.vision and self.spec.vision_high_resolution:
                body.setdefault("vl_high_resolution_images", True)
            # Hybrid-thinking Qwen models think by default and then refuse non-stream
            # calls (400); thinking-only models refuse enable_thinking=false.
            if not stream and "enable_thinking" not in body and not _thinking_only(model):
                body["enable_thinking"] = False
        return compact_json(body)

    def headers_for(self, call: UpstreamCall, *, stream: bool) -> Mapping[str, str]:
        base = self._stream_headers if stream else self._headers
        if not call.headers:
            return base
        return {**call.headers, **base}

    def timeout_for(self, call: UpstreamCall, *, stream: bool) -> aiohttp.ClientTimeout:
        timeout = self._stream_timeout if stream else self._timeout
        remaining = call.remaining()
        if remaining is None or remaining >= self.spec.timeout_seconds:
            return timeout
        remaining = max(remaining, 0.001)
        if stream:
            return aiohttp.ClientTimeout(
                total=None,
                connect=min(self.spec.connect_timeout_seconds, remaining),
                sock_connect=min(self.spec.connect_timeout_seconds, remaining),
            )
        return aiohttp.ClientTimeout(
            total=remaining,
            connect=min(self.spec.connect_timeout_seconds, remaining),
            sock_connect=min(self.spec.connect_timeout_seconds, remaining),
        )

    def read_limit(self, call: UpstreamCall) -> float:
        """The longest silence a stream may keep: before its headers, before its first
        event and between events (``timeoutSeconds``, or less near the deadline)."""
        remaining = call.remaining()
        if remaining is None:
            return self.spec.timeout_seconds
        return max(min(remaining, self.spec.timeout_seconds), 0.001)

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session.get()

    @property
    def chat_url(self) -> URL:
        return self._chat_url

    # -- calls ------------------------------------------------------------------------

    async def chat(self, call: UpstreamCall) -> UpstreamResult:
        return await self._post_json(call, self._chat_url, chat=True)

    async def embeddings(self, call: UpstreamCall) -> UpstreamResult:
        return await self._post_json(call, self._embed_url, chat=False)

    def chat_stream(self, call: UpstreamCall) -> StreamHandle:
        return WireStream(self, call)

    async def aclose(self) -> None:
        """Nothing to close: the shared session belongs to the registry."""

    async def _post_json(self, call: UpstreamCall, url: URL, *, chat: bool) -> UpstreamResult:
        session = self._session.get()
        headers = self.headers_for(call, stream=False)
        last = len(call.models) - 1
        for i, model in enumerate(call.models):
            if chat:
                data = self.encode_chat(call, model, stream=False)
            else:
                body = dict(call.body)
                body["model"] = model
                data = compact_json(body)
            started = time.monotonic()
            try:
                async with session.post(
                    url, data=data, headers=headers, timeout=self.timeout_for(call, stream=False)
                ) as resp:
                    raw = await self._read_bounded(resp, model)
                    status = resp.status
                    if 200 <= status < 300:
                        usage = usage_from_body(raw)
                        problem = answer_problem(raw, usage)
                        if problem is not None:
                            raise UpstreamError(
                                ErrorKind.PROTOCOL,
                                problem,
                                provider=self.provider,
                                model=model,
                                retriable=False,
                            )
                        return UpstreamResult(
                            status=status,
                            body=raw,
                            model=model,
                            usage=usage,
                            content_type=answer_type(resp),
                            latency_s=time.monotonic() - started,
                        )
                    error = status_error(
                        status, resp.headers, raw, provider=self.provider, model=model
                    )
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise map_exception(exc, provider=self.provider, model=model) from None
            if status in MODEL_FALLBACK_STATUSES and i < last:
                log.info(
                    "provider %s: model %s answered %d, trying %s",
                    self.provider,
                    model,
                    status,
                    call.models[i + 1],
                )
                continue
            raise error
        raise AssertionError("unreachable: UpstreamCall.models is never empty")

    async def _read_bounded(self, resp: aiohttp.ClientResponse, model: str) -> bytes:
        """The whole answer, failing (502) past ``max_body_bytes``."""
        limit = self.max_body_bytes
        if resp.content_length is None or resp.content_length <= limit:
            parts: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    break
                parts.append(chunk)
            else:
                return b"".join(parts)
        raise UpstreamError(
            ErrorKind.PROTOCOL,
            f"the answer is larger than {limit} bytes",
            provider=self.provider,
            model=model,
            retriable=False,
        )


def answer_type(resp: aiohttp.ClientResponse) -> str:
    """The answer's media type; the usual header is taken as it is, without aiohttp's
    parse of it (~3 us a request)."""
    declared = resp.headers.get(hdrs.CONTENT_TYPE)
    if declared == _JSON:
        return declared
    return resp.content_type or _JSON


_JSON = "application/json"


def _thinking_only(model: str) -> bool:
    lowered = model.lower()
    return any(marker in lowered for marker in _THINKING_ONLY_MARKERS)
