"""The adapter for Anthropic's Messages API (provider type ``anthropic``).

The same lean aiohttp path as the OpenAI-wire adapter (one shared session, the body
serialised once, per-provider timeouts, the model fallback on 403/404), with the
request and the answer translated between the chat-completions wire the sidecar
speaks inside and Anthropic's (:mod:`.anthropic_wire`): the key goes in
``x-api-key`` with ``anthropic-version: 2023-06-01``, a stream's events are
re-told as chat-completion chunks as they arrive. The completion cap is always
sent (the API requires one): the client's, else the reservation's.
"""

from __future__ import annotations

from ..jsonbytes import compact_json
from .anthropic_wire import (
    ANTHROPIC_VERSION,
    MessagesSse,
    chat_to_messages,
    message_to_chat,
    refused,
)
from .base import ErrorKind, StreamHandle, UpstreamCall, UpstreamError, UpstreamResult
from .openai_wire import OpenAIWireAdapter
from .wire_stream import WireStream


class AnthropicAdapter(OpenAIWireAdapter):
    """One provider of type ``anthropic``."""

    chat_path = "/messages"

    def key_headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    def encode_chat(self, call: UpstreamCall, model: str, *, stream: bool) -> bytes:
        body = call.body
        cap = next(
            (
                v
                for v in (
                    body.get("max_tokens"),
                    body.get("max_completion_tokens"),
                    call.max_tokens,
                )
                if isinstance(v, int) and not isinstance(v, bool) and v > 0
            ),
            self.spec.default_max_tokens,
        )
        try:
            request = chat_to_messages(body, model, cap, stream=stream, provider=self.provider)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            # A field of a shape the translation does not expect: the client's to fix.
            raise refused(
                "the request cannot be written as an Anthropic Messages request "
                f"({exc.__class__.__name__}); check the types of its fields",
                model,
                self.provider,
                code="invalid_request",
            ) from None
        return compact_json(request)

    async def chat(self, call: UpstreamCall) -> UpstreamResult:
        result = await super().chat(call)
        try:
            body, usage = message_to_chat(result.body, result.model)
        except (ValueError, AttributeError, TypeError, RecursionError):
            raise UpstreamError(
                ErrorKind.PROTOCOL,
                "the answer is not a Messages API message",
                provider=self.provider,
                model=result.model,
            ) from None
        return UpstreamResult(
            status=result.status,
            body=body,
            model=result.model,
            usage=usage,
            latency_s=result.latency_s,
        )

    def chat_stream(self, call: UpstreamCall) -> StreamHandle:
        events = MessagesSse(
            keep_usage_chunk=call.client_wants_usage,
            model=call.models[0],
            provider=self.provider,
            max_event_bytes=self.max_event_bytes,
        )
        return WireStream(self, call, events)

    async def embeddings(self, call: UpstreamCall) -> UpstreamResult:
        raise UpstreamError(
            ErrorKind.CONFIG,
            "Anthropic's API has no embeddings",
            provider=self.provider,
            model=call.models[0],
            retriable=False,
        )
