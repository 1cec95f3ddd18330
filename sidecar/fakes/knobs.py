"""Behaviour switches of a fake upstream and the log of what it received.

Knobs are plain attributes (set them in-process: ``fake.knobs.fail_next = 2``) and
are also settable out of process with ``POST /_fake/knobs`` and a JSON object of
the same names, so a demo or a multi-process test can steer a fake that runs as
its own process.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from .invoice import Invoice

FakeKind = Literal["openai", "dashscope", "ollama", "anthropic"]
KINDS: tuple[FakeKind, ...] = ("openai", "dashscope", "ollama", "anthropic")

DEFAULT_MODELS: dict[str, list[str]] = {
    "openai": ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "text-embedding-3-large"],
    "dashscope": [
        "qwen-plus",
        "qwen-turbo",
        "qwen-max",
        "qwen3-8b",
        "qwq-plus",
        "qwen3-vl-30b-a3b-instruct",
        "qwen3-vl-30b-a3b-thinking",
        "text-embedding-v4",
    ],
    "ollama": ["gemma3:4b", "qwen2.5vl:7b", "llama3.2:latest", "nomic-embed-text:latest"],
    "anthropic": ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"],
}


@dataclass
class Knobs:
    """What a fake does besides answering correctly. Defaults: answer at once."""

    latency_ms: float = 0.0
    """Delay before the response starts (time to first byte)."""
    chunk_delay_ms: float = 0.0
    """Delay between stream chunks."""
    fail_next: int = 0
    """The next N requests fail with ``fail_status``."""
    fail_status: int = 500
    error_rate: float = 0.0
    """Probability that a request fails with ``error_status`` (RNG seeded by ``seed``)."""
    error_status: int = 500
    seed: int = 0
    retry_after: float | None = None
    """``Retry-After`` seconds sent with injected failures; 429 sends 1 when unset."""
    cut_after_chunks: int | None = None
    """Streams: close the connection after this many chunks, without ``[DONE]``."""
    omit_usage: bool = False
    """Leave usage out (non-stream ``usage``, the usage chunk, Ollama's counts)."""
    usage_override: dict[str, Any] | None = None
    """Fields merged into every usage object (``{"prompt_tokens": "12"}``, negatives…)."""
    invalid_json: bool = False
    """Answer 200 with a body cut in the middle of its JSON; a stream's first event
    is not JSON either."""
    nested_levels: int = 0
    """Answer 200 with JSON that also holds a value nested this many arrays deep (a
    stream: an event of such JSON first), valid JSON no parser with a depth limit reads."""
    error_body_200: bool = False
    """Answer 200 with an error body (a stream: one ``data: {"error": …}`` event, then
    the connection closes)."""
    cut_mid_event: int | None = None
    """Streams: after this many chunks, send half of the next one and drop the connection."""
    huge_event_bytes: int = 0
    """Streams: the first chunk is preceded by an event of one line this many bytes long."""
    drip_bytes_per_second: float = 0.0
    """Write every answer (stream or not) one byte at a time at this rate."""
    stall_after_chunks: int | None = None
    """Streams: after this many chunks, send nothing more for ``stall_ms``."""
    stall_ms: float = 3_600_000.0
    forbidden_models: list[str] = field(default_factory=list)
    """Models that answer 403 (e.g. an instruct VLM the account may not use)."""
    missing_models: list[str] = field(default_factory=list)
    """Models that answer 404."""
    require_auth: bool | None = None
    """Demand ``Authorization: Bearer``; None = the kind's default (not for Ollama)."""
    api_key: str | None = None
    """When set, only this exact bearer key is accepted."""
    tool_calls: bool = False
    """Answer with a tool call whenever the request offers tools (``tool_choice``
    ``required`` or a named function forces one regardless; ``none`` never)."""
    reply: str | None = None
    """Fixed completion text instead of the default sentence."""
    echo: bool = False
    """Reply with the text of the last user message (a model repeating what it was
    given, placeholders included)."""
    record_bodies: bool = False
    """Keep each request's body as received (``raw`` in its log entry): what a
    provider saw, for leak tests."""
    embedding_dims: int = 8
    models: list[str] | None = None
    """Models listed by ``/v1/models`` and ``/api/tags``; None = the kind's defaults.
    Any model name is served unless it is in ``forbidden_models``/``missing_models``."""
    thinking_default_models: list[str] = field(
        default_factory=lambda: ["qwen3-8b", "qwen3-14b", "qwen3-32b", "qwen3-235b-a22b"]
    )
    """DashScope hybrid models whose ``enable_thinking`` defaults to true."""
    hybrid_thinking_models: list[str] = field(
        default_factory=lambda: ["qwen-plus", "qwen-turbo", "qwen-flash"]
    )
    """DashScope hybrid models that think only with ``enable_thinking: true``."""
    stream_only_models: list[str] = field(default_factory=lambda: ["qwq-plus", "qvq-max"])
    prices: dict[str, Any] | None = None
    """USD per million tokens by model, ``{"gpt-4o": {"inputPer1M": "2.5",
    "outputPer1M": "10"}}``, for the fake's own invoice (``GET /_fake/invoice``);
    unpriced models are billed at zero."""

    def update(self, values: dict[str, Any]) -> None:
        """Set knobs from a JSON object; unknown names or wrong types raise ValueError."""
        known = {f.name: f for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown knob {name!r}")
            setattr(self, name, _coerce(name, known[name].type, value))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    text = str(annotation)
    if value is None:
        if "None" in text:
            return None
        raise ValueError(f"knob {name} may not be null")
    if text.startswith("list"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"knob {name} takes a list of strings")
        return list(value)
    if text.startswith("bool"):
        if not isinstance(value, bool):
            raise ValueError(f"knob {name} takes true or false")
        return value
    if text.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"knob {name} takes an integer")
        return value
    if text.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"knob {name} takes a number")
        return float(value)
    if text.startswith("dict"):
        if not isinstance(value, dict):
            raise ValueError(f"knob {name} takes an object")
        return dict(value)
    if text.startswith("str"):
        if not isinstance(value, str):
            raise ValueError(f"knob {name} takes a string")
        return value
    raise ValueError(f"knob {name}: unsupported type {text}")  # pragma: no cover


class FakeState:
    """Knobs, the failure dice and the request log of one fake server."""

    def __init__(self, kind: FakeKind, knobs: Knobs | None = None, *, log_size: int = 10_000):
        self.kind: FakeKind = kind
        self.knobs = knobs or Knobs()
        self.requests: deque[dict[str, Any]] = deque(maxlen=log_size)
        self.invoice = Invoice()
        self._rng = random.Random(self.knobs.seed)
        self._seed = self.knobs.seed
        self._counter = 0

    def reset(self) -> None:
        self.knobs = Knobs()
        self.requests.clear()
        self.invoice.clear()
        self._rng = random.Random(0)
        self._seed = 0

    def next_id(self) -> int:
        self._counter += 1
        return self._counter

    def take_failure(self) -> int | None:
        """The status of an injected failure for this request, if any."""
        knobs = self.knobs
        if knobs.fail_next > 0:
            knobs.fail_next -= 1
            return knobs.fail_status
        if knobs.error_rate > 0:
            if knobs.seed != self._seed:
                self._rng = random.Random(knobs.seed)
                self._seed = knobs.seed
            if self._rng.random() < knobs.error_rate:
                return knobs.error_status
        return None

    @property
    def auth_required(self) -> bool:
        if self.knobs.require_auth is not None:
            return self.knobs.require_auth
        return self.kind != "ollama" or self.knobs.api_key is not None

    @property
    def models(self) -> list[str]:
        return self.knobs.models if self.knobs.models is not None else DEFAULT_MODELS[self.kind]
