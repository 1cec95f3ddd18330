"""The front ends' one face: a request in, the internal body out; answers back.

Every API is served through one internal request, the chat-completions body the
router, budgets and adapters handle (embeddings keep their own body). The
client's own body stays beside it: privacy detection reads what the client sent,
whatever the API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import field
from typing import Any, Protocol

from ..values import valueclass
from .kinds import Api
from .messages_answer import MessagesStream, chat_to_message
from .messages_request import messages_to_chat
from .responses_answer import chat_to_response
from .responses_request import responses_to_chat
from .responses_stream import ResponsesStream


@valueclass
class Translated:
    """One request in both forms."""

    api: Api
    original: dict[str, Any]  # as the client sent it
    body: dict[str, Any]  # the internal form (the same object for chat and embeddings)
    echo: Mapping[str, Any] = field(default_factory=dict)  # what a Response repeats


class StreamTranslator(Protocol):
    """Turns the upstream's chat-completion events into the client's API's events."""

    def start(self) -> bytes: ...

    def feed(self, events: bytes) -> bytes: ...

    def finish(self, usage: tuple[int, int] | None) -> bytes: ...

    def failed(self, error: Mapping[str, Any]) -> bytes: ...


class ChatStream:
    """Chat completions need no translation: events pass unchanged."""

    def start(self) -> bytes:
        return b""

    def feed(self, events: bytes) -> bytes:
        return events

    def finish(self, usage: tuple[int, int] | None) -> bytes:
        return b""

    def failed(self, error: Mapping[str, Any]) -> bytes:
        return b"data: " + json.dumps(error).encode() + b"\n\n"


def translate(api: Api, body: dict[str, Any]) -> Translated:
    """The internal form of a parsed body; raises ``BadRequest`` naming the field."""
    if api is Api.RESPONSES:
        chat, echo = responses_to_chat(body)
        return Translated(api, body, chat, echo)
    if api is Api.MESSAGES:
        return Translated(api, body, messages_to_chat(body))
    return Translated(api, body, body)


def answer(request: Translated, raw: bytes, request_id: str) -> bytes:
    """A whole upstream answer (chat completion JSON) in the client's API.

    Raises ``ValueError`` when the upstream's body is not JSON."""
    if request.api is Api.RESPONSES:
        return chat_to_response(raw, request.echo, request_id)
    if request.api is Api.MESSAGES:
        return chat_to_message(raw, request_id)
    return raw


def stream_translator(request: Translated, request_id: str, model: str) -> StreamTranslator:
    if request.api is Api.RESPONSES:
        return ResponsesStream(request.echo, request_id, model)
    if request.api is Api.MESSAGES:
        return MessagesStream(request_id, model)
    return ChatStream()
