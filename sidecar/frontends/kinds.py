"""Which API a client speaks, and what that decides inside the sidecar."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from ..request import Kind

ErrorShape = Literal["openai", "anthropic"]


class Api(StrEnum):
    """The wire protocol of one endpoint: its request, its answers and its errors."""

    CHAT = "chat"  # POST /v1/chat/completions
    EMBEDDINGS = "embeddings"  # POST /v1/embeddings
    RESPONSES = "responses"  # POST /v1/responses (OpenAI Responses)
    MESSAGES = "messages"  # POST /v1/messages (Anthropic Messages)

    @property
    def kind(self) -> Kind:
        """The internal request kind: every API but embeddings becomes a chat request."""
        return "embeddings" if self is Api.EMBEDDINGS else "chat"

    @property
    def error_shape(self) -> ErrorShape:
        """Whose error body the endpoint answers with."""
        return "anthropic" if self is Api.MESSAGES else "openai"

    @property
    def translated(self) -> bool:
        """Whether requests and answers are translated to and from the internal form."""
        return self in (Api.RESPONSES, Api.MESSAGES)
