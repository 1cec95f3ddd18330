"""The long-lived state of one sidecar process and its hot reload.

A request reads ``runtime.current`` once and uses that snapshot to the end, so a
reload swaps in a new config without touching requests already in flight; the
adapter registry closes a replaced provider's adapter only when its last call
has finished.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..adapters import AdapterRegistry, CircuitState
from ..budgets import BudgetBook, LeaseBudgetSource
from ..contract import LoadedConfig, SidecarConfig
from ..ledger import ledger_url
from ..limits import RateLimiter
from ..limits.leases import LeaseSlots
from ..limits.limiter import window_from_env
from ..limits.metrics import RateCollector
from ..limits.scopes import limits_in_force
from ..metrics import SidecarMetrics
from .tracing import request_tracer
from .watcher import ConfigWatcher
from .wiring import build_ledger, open_budgets

log = logging.getLogger(__name__)

# The pod's attribution, set by the injector (docs/ledger.md, "Attribution"): the
# owning workload as resolved at admission and the pod's ServiceAccount.
WORKLOAD_ENV = "AEGIS_WORKLOAD"
SERVICE_ACCOUNT_ENV = "AEGIS_SERVICE_ACCOUNT"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One config version and the names derived from it."""

    config: SidecarConfig
    hash: str
    loaded_at: datetime


@dataclass(slots=True)
class ReloadState:
    """What ``/readyz`` reports about the newest config on disk."""

    last_error: str | None = None
    last_error_at: datetime | None = None
    restart_required: str | None = None


class Runtime:
    """Config snapshot, adapters, budgets, ledger and metrics of one sidecar."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        config_path: Path | None = None,
        metrics: SidecarMetrics | None = None,
        reload_interval: float = 1.0,
        pod: str | None = None,
        workload: str | None = None,
        service_account: str | None = None,
    ) -> None:
        self.metrics = metrics or SidecarMetrics()
        self.current = Snapshot(loaded.config, loaded.hash, datetime.now(UTC))
        self.reload_state = ReloadState()
        self.pod = pod or os.environ.get("POD_NAME") or os.uname().nodename
        # Recorded on every ledger row (None: not injected, e.g. a standalone sidecar).
        self.workload = workload or os.environ.get(WORKLOAD_ENV) or None
        self.service_account = service_account or os.environ.get(SERVICE_ACCOUNT_ENV) or None
        self.ledger_url = ledger_url(loaded.config.ledger)
        self.adapters = AdapterRegistry(loaded.config, breaker_listener=self._on_breaker_state)
        # Spooled ledger; with PostgreSQL the book spends budget leases (docs/ledger.md).
        self.ledger = build_ledger(self.ledger_url, loaded.config, self.pod)
        self.book: BudgetBook | None = None
        self.leases: LeaseBudgetSource | None = None
        # Rate limits: the whole limit standalone, leases on PostgreSQL (start()).
        self.limits = RateLimiter(window=window_from_env(os.environ))
        self.limits.configure(limits_in_force(loaded.config))
        self.rate_leases: LeaseSlots | None = None
        self.started_at = time.monotonic()
        self.ready = False
        # OpenTelemetry spans, when the OTEL_* environment turns them on (else None).
        self.tracer = request_tracer(os.environ)
        self._watcher = (
            ConfigWatcher(
                config_path,
                loaded.hash,
                apply=self.apply,
                on_invalid=self._on_invalid,
                interval=reload_interval,
            )
            if config_path is not None
            else None
        )
        self._export_config_metrics()

    @property
    def budgets(self) -> BudgetBook:
        if self.book is None:
            raise RuntimeError("Runtime.start() has not been awaited")
        return self.book

    async def start(self) -> None:
        await self.ledger.start()
        config = self.current.config
        self.book, self.leases = await open_budgets(
            config.budgets,
            self.ledger,
            self.metrics.registry,
            service_account=self.service_account,
            local_providers=config.local_providers,
        )
        if self.leases is not None:
            self.leases.longest_call(config.listen.limits.request_timeout_seconds)
        if not self.ledger.database.is_sqlite:  # shared limits: leases
            self.rate_leases = LeaseSlots(self.ledger.database, self.ledger.holder)
            self.limits.use_source(self.rate_leases)
            self.rate_leases.start()
        self.metrics.registry.register(RateCollector(self.limits, self.rate_leases))
        if self._watcher is not None:
            self._watcher.start()
        self.refresh_budget_metrics()
        self.ready = True

    async def aclose(self) -> None:
        self.ready = False
        if self._watcher is not None:
            await self._watcher.stop()
        await self.adapters.aclose()
        if self.rate_leases is not None:
            await self.rate_leases.aclose()  # give back free rate-limit slots
        if self.leases is not None:
            await self.leases.aclose()  # return unused lease money
        await self.ledger.aclose()
        if self.tracer is not None:
            await self.tracer.aclose()

    async def apply(self, loaded: LoadedConfig) -> None:
        """Install a new valid config; in-flight requests keep their snapshot."""
        new = loaded.config
        old = self.current.config
        self.adapters.reload(new)
        self.budgets.reconfigure(new.budgets, new.local_providers)
        if self.leases is not None:
            self.leases.longest_call(new.listen.limits.request_timeout_seconds)
        self.limits.configure(limits_in_force(new))
        self.current = Snapshot(new, loaded.hash, datetime.now(UTC))
        self.reload_state.last_error = None
        self.reload_state.last_error_at = None
        if ledger_url(new.ledger) != self.ledger_url or new.listen != old.listen:
            # Sockets and the ledger connection are opened once; say so instead of
            # pretending the change took effect.
            self.reload_state.restart_required = (
                "listen or ledger settings changed; they apply after a restart"
            )
        self.metrics.config_reloads.labels("applied").inc()
        self._export_config_metrics()
        self.refresh_budget_metrics()
        log.info("config %s applied (route %s)", loaded.hash, new.identity.route)

    def _on_invalid(self, message: str) -> None:
        self.reload_state.last_error = message
        self.reload_state.last_error_at = datetime.now(UTC)
        self.metrics.config_reloads.labels("invalid").inc()
        self.metrics.config_valid.set(0)
        log.error("new config refused, keeping %s: %s", self.current.hash, message)

    def _on_breaker_state(self, provider: str, state: CircuitState) -> None:
        self.metrics.circuit_state.labels(provider).set(int(state))

    def _export_config_metrics(self) -> None:
        config = self.current.config
        self.metrics.config_info.clear()
        self.metrics.config_info.labels(
            self.current.hash, config.identity.route, config.identity.namespace
        ).set(1)
        self.metrics.config_valid.set(1)
        self.metrics.rollout_weight.set(config.rollout.weight if config.rollout else 0)
        for provider in config.providers:
            self.metrics.circuit_state.labels(provider.name).set(
                int(self.adapters.breakers.get(provider.name).state)
            )

    def refresh_budget_metrics(self) -> None:
        if self.book is None:
            return
        m = self.metrics
        for snap in self.book.snapshot():
            labels = (snap.name, snap.key, snap.provider)
            m.budget_limit.labels(*labels).set(float(snap.limit))
            m.budget_spent.labels(*labels).set(float(snap.spent))
            m.budget_reserved.labels(*labels).set(float(snap.reserved))
            m.budget_remaining.labels(*labels).set(float(snap.remaining))
            m.budget_utilisation.labels(*labels).set(float(snap.utilisation))
        m.ledger_queue.set(self.ledger.pending)
