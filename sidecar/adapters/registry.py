"""The adapters of the current config, rebuilt on reload without dropping calls.

One :class:`AdapterRegistry` per sidecar process. It owns the shared aiohttp
session, the any-llm client pool and the circuit breakers, and hands out one
:class:`ResilientAdapter` per provider (retries + breaker around the raw
adapter). On :meth:`reload` a provider whose spec did not change keeps its
adapter; a changed or removed provider's old adapter is closed only after its
last in-flight call has finished, so a reload never cuts a running request.
Breaker state is kept per provider name across reloads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Mapping

from ..contract import ProviderSpec, ProviderType, SidecarConfig
from .anthropic import AnthropicAdapter
from .anyllm import AnyLLMAdapter, AnyLLMClients
from .base import Adapter
from .openai_wire import OpenAIWireAdapter, SharedSession
from .resilience import (
    CircuitBreakers,
    Clock,
    ResilientAdapter,
    RetryPolicy,
    Sleep,
    StateListener,
)

log = logging.getLogger(__name__)


class AdapterRegistry:
    """Adapters per provider for the current config (also the router's HealthView)."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        env: Mapping[str, str] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        session: SharedSession | None = None,
        breaker_listener: StateListener | None = None,
        retry_base_delay: float = 0.1,
        retry_max_delay: float = 2.0,
        max_retry_after: float = 5.0,
    ) -> None:
        self._env = env
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._owns_session = session is None
        self.session = session or SharedSession()
        self.anyllm_clients = AnyLLMClients()
        self.breakers = CircuitBreakers(clock=clock, listener=breaker_listener)
        self._retry = (retry_base_delay, retry_max_delay, max_retry_after)
        self._adapters: dict[str, ResilientAdapter] = {}
        self._fingerprints: dict[str, tuple[ProviderSpec, str | None]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._limits = config.listen.limits  # apply at start (listen changes need a restart)
        self._apply(config)

    # -- lookups ----------------------------------------------------------------------

    def get(self, provider: str) -> ResilientAdapter:
        """The adapter of a provider of the current config (KeyError when unknown)."""
        return self._adapters[provider]

    def __contains__(self, provider: object) -> bool:
        return provider in self._adapters

    def providers(self) -> list[str]:
        return list(self._adapters)

    def is_open(self, provider_name: str) -> bool:
        return self.breakers.is_open(provider_name)

    def circuit_states(self) -> dict[str, int]:
        return self.breakers.states()

    # -- lifecycle --------------------------------------------------------------------

    def reload(self, config: SidecarConfig) -> None:
        """Switch to a new config. Old adapters close once their calls have finished
        (call this from the event loop)."""
        retired = self._apply(config)
        for adapter in retired:
            task = asyncio.get_running_loop().create_task(self._retire(adapter))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def aclose(self, *, grace_seconds: float = 5.0) -> None:
        """Close every adapter (after in-flight calls, up to ``grace_seconds``)."""
        adapters, self._adapters = list(self._adapters.values()), {}
        self._fingerprints = {}
        for adapter in adapters:
            try:
                await asyncio.wait_for(adapter.wait_idle(), grace_seconds)
            except TimeoutError:
                log.warning("provider %s: closing with calls still in flight", adapter.provider)
            await adapter.aclose()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.anyllm_clients.aclose()
        if self._owns_session:
            await self.session.aclose()

    # -- internals --------------------------------------------------------------------

    def _apply(self, config: SidecarConfig) -> list[ResilientAdapter]:
        self.breakers.configure(config.providers)
        new: dict[str, ResilientAdapter] = {}
        fingerprints: dict[str, tuple[ProviderSpec, str | None]] = {}
        retired: list[ResilientAdapter] = []
        for spec in config.providers:
            env = os.environ if self._env is None else self._env
            fingerprint = (spec, env.get(spec.api_key_env) if spec.api_key_env else None)
            fingerprints[spec.name] = fingerprint
            old = self._adapters.get(spec.name)
            if old is not None and self._fingerprints.get(spec.name) == fingerprint:
                new[spec.name] = old
                continue
            new[spec.name] = self._build(spec)
            if old is not None:
                retired.append(old)
        for name, adapter in self._adapters.items():
            if name not in new:
                retired.append(adapter)
        self._adapters = new
        self._fingerprints = fingerprints
        return retired

    def _build(self, spec: ProviderSpec) -> ResilientAdapter:
        inner: Adapter
        if spec.type is ProviderType.ANY_LLM:
            inner = AnyLLMAdapter(spec, self.anyllm_clients, env=self._env)
        else:
            wire = AnthropicAdapter if spec.type is ProviderType.ANTHROPIC else OpenAIWireAdapter
            inner = wire(
                spec,
                self.session,
                env=self._env,
                max_event_bytes=self._limits.max_upstream_event_bytes,
                max_body_bytes=self._limits.max_upstream_body_bytes,
            )
        base_delay, max_delay, max_retry_after = self._retry
        policy = RetryPolicy(
            max_retries=spec.max_retries,
            base_delay=base_delay,
            max_delay=max_delay,
            max_retry_after=max_retry_after,
        )
        return ResilientAdapter(
            inner,
            self.breakers.get(spec.name),
            policy,
            clock=self._clock,
            sleep=self._sleep,
            rng=self._rng,
        )

    async def _retire(self, adapter: ResilientAdapter) -> None:
        await adapter.wait_idle()
        await adapter.aclose()
