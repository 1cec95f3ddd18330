"""Fake LLM providers that speak the real wire protocols, for tests and the offline demo.

Four kinds: ``openai`` (api.openai.com ``/v1``), ``dashscope`` (Alibaba Model
Studio compatible mode ``/compatible-mode/v1``), ``ollama`` (native ``/api/*``
plus its ``/v1`` OpenAI face) and ``anthropic`` (the Messages API,
``/v1/messages``). Answers and token counts are deterministic (rules in
:mod:`aegis.sidecar.fakes.content`); behaviour under failure is set with
:class:`Knobs` (:mod:`aegis.sidecar.fakes.knobs`).

Wire details were checked against the providers' published references: OpenAI's
chat-completions / streaming / ``stream_options.include_usage`` / error object,
Alibaba Model Studio's deep-thinking and vision guides and real compatible-mode
error bodies, Ollama's ``docs/api.md`` and ``openai/openai.go``, and Anthropic's
Messages, streaming and errors references (and its official SDK's types).
"""

from .knobs import DEFAULT_MODELS, KINDS, FakeKind, Knobs
from .server import FakeUpstream, build_app

__all__ = ["DEFAULT_MODELS", "KINDS", "FakeKind", "FakeUpstream", "Knobs", "build_app"]
