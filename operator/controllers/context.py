"""What every handler shares: API client, ledger engine, metrics, options, locks.

One :class:`Context` per operator process, passed to kopf as the memo's
``aegis`` entry (kopf gives each handler a memo). Handlers are plain functions;
this is the only state they reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ..kube import KubeClient
from ..metrics import OperatorMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Options:
    """Operator behaviour (from the command line)."""

    #: Seconds between ledger reads per LLMBudget (status, gauges, alert events).
    budget_interval: float = 30.0
    #: Seconds between full re-checks of each LLMRoute (Secrets appearing, ConfigMap
    #: drift): the safety net under the event-driven reconciles.
    resync_interval: float = 300.0
    #: Seconds between rollout controller passes per LLMRoute with ``spec.rollout``:
    #: how late past its ``interval`` a step may be analysed.
    rollout_tick: float = 10.0
    #: ``LLMBudget.status.lastSync`` is rewritten at least this often when nothing
    #: else changed (otherwise every read would be a write).
    sync_heartbeat: float = 300.0
    #: The only namespace whose LLMBudgets may apply to other namespaces
    #: (``spec.namespaces``); ``None``: budgets apply to their own namespace only.
    platform_namespace: str | None = None
    #: Read the key names of the Secrets a route refers to (``Ready`` says which is
    #: missing). Off by default: it needs ``get`` on Secrets, and tells a route author
    #: which Secrets and keys exist; pods name a missing one in their own events.
    check_secrets: bool = False
    #: The Secret each served namespace gets with its own ledger DSN (its tenant
    #: role, made through the control DSN); ``None``: tenants are managed elsewhere.
    tenant_secret: str | None = None
    #: Host, port, database and options of the ledger as sidecars reach it (its
    #: credentials are ignored); ``None``: those of the control DSN.
    tenant_url: str | None = None


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it.

    kopf runs an object's change handlers one at a time, but timers and the
    fan-out from budget changes run beside them: all of them take the object's
    lock, so a reconcile always reads, decides and writes alone.

    A wait or a hold longer than ``slow`` seconds is logged with the key: a handler
    stuck behind another one (a deletion waiting on a route's reconcile) shows who
    held what, and for how long."""

    def __init__(self, slow: float = 5.0) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}
        self._slow = slow

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        asked = time.monotonic()
        try:
            async with lock:
                got = time.monotonic()
                if got - asked > self._slow:
                    log.warning("waited %.1f s for the lock of %s", got - asked, key)
                try:
                    yield
                finally:
                    held = time.monotonic() - got
                    if held > self._slow:
                        log.warning("held the lock of %s for %.1f s", key, held)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    kube: KubeClient
    #: The ledger's read-only role: budget status and rollout analysis.
    ledger: AsyncEngine | None
    metrics: OperatorMetrics
    options: Options = field(default_factory=Options)
    #: The ledger's control role: budget limits and tenant roles (autocommit).
    control: AsyncEngine | None = None
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    now: Callable[[], datetime] = _utcnow
    #: Namespace → the ClusterLLMBudgets that reached it when last looked at: a
    #: namespace event re-renders its routes only when that set changes.
    cluster_reach: dict[str, frozenset[str]] = field(default_factory=dict)


MEMO_KEY = "aegis"


def context(memo: Any) -> Context:
    """The operator's :class:`Context` from a kopf memo."""
    found = memo[MEMO_KEY]
    if not isinstance(found, Context):
        raise TypeError(f"memo[{MEMO_KEY!r}] is not an aegis Context")
    return found
