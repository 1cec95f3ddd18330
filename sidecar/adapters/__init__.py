"""Provider adapters: how the sidecar calls one provider.

* :mod:`.base` — the contract (``UpstreamCall`` → ``UpstreamResult`` /
  ``StreamHandle``, ``UpstreamError``).
* :mod:`.openai_wire` — the lean aiohttp pass-through for OpenAI-wire providers,
  with the SSE filtering and error mapping it shares in :mod:`.wire`; its streams
  and their idle bound in :mod:`.wire_stream`; a stream's unfinished event, within
  its bound, in :mod:`.sse_events`.
* :mod:`.anthropic` — Anthropic's Messages API, on the same lean path, translated
  to and from the chat-completions wire by :mod:`.anthropic_wire`.
* :mod:`.anyllm` — every other provider through any-llm-sdk (imported lazily).
* :mod:`.resilience` — retries with backoff and the per-provider circuit breaker.
* :mod:`.registry` — the adapters of the current config, hot-reloadable; its
  breakers answer the router's health port
  (:class:`~aegis.sidecar.routing.ports.HealthView`).
"""

from .base import (
    Adapter,
    ErrorKind,
    StreamHandle,
    UpstreamCall,
    UpstreamError,
    UpstreamResult,
    Usage,
)
from .registry import AdapterRegistry
from .resilience import (
    CircuitBreaker,
    CircuitBreakers,
    CircuitState,
    ResilientAdapter,
    RetryPolicy,
)

__all__ = [
    "Adapter",
    "AdapterRegistry",
    "CircuitBreaker",
    "CircuitBreakers",
    "CircuitState",
    "ErrorKind",
    "ResilientAdapter",
    "RetryPolicy",
    "StreamHandle",
    "UpstreamCall",
    "UpstreamError",
    "UpstreamResult",
    "Usage",
]
