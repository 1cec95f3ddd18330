"""The long-lived state of one sidecar process: config, adapters, budgets, ledger.

Built once at start-up from the config (:mod:`.wiring` opens the ledger and the
budget book), swapped whole on a hot reload (:mod:`.watcher` polls the file), so
each request reads one consistent :class:`Snapshot`.
"""

from .process import ReloadState, Runtime, Snapshot
from .watcher import ConfigWatcher

__all__ = ["ConfigWatcher", "ReloadState", "Runtime", "Snapshot"]
