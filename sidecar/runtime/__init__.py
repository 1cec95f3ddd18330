"""The long-lived state of one sidecar process: config, adapters, budgets, ledger.

Built once at start-up from the config (:mod:`.wiring` opens the ledger and the
budget book), swapped whole on a hot reload (:mod:`.watcher` polls the file), so
each request reads one consistent :class:`Snapshot`. :mod:`.tracing` holds the
OpenTelemetry tracer when the ``OTEL_*`` environment turns traces on.
"""

from .process import ReloadState, Runtime, Snapshot
from .tracing import RequestTrace, RequestTracer
from .watcher import ConfigWatcher

__all__ = ["ConfigWatcher", "ReloadState", "RequestTrace", "RequestTracer", "Runtime", "Snapshot"]
