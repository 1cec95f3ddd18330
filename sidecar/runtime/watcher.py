"""Watching the sidecar config (a YAML file or a mounted ConfigMap directory) for changes.

In a pod the config is a ConfigMap mounted as a whole directory (never subPath):
the kubelet swaps a ``..data`` symlink atomically on change, so re-reading the file
by name always sees a complete old or a complete new document. The watcher polls
the content hash rather than using inotify because symlink swaps do not raise
events on the file a reader names, and one small read per second costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..contract.document import (
    ConfigError,
    LoadedConfig,
    content_hash,
    load_config,
    parse_config,
    resolve_config_file,
)

__all__ = ["ConfigWatcher", "load_config"]

log = logging.getLogger(__name__)


class ConfigWatcher:
    """Polls the config and hands each new valid version to ``apply``.

    An invalid new version is reported through ``on_invalid`` and the last good
    config stays in force; the same broken content is reported once, not every poll.
    """

    def __init__(
        self,
        path: Path,
        current_hash: str,
        apply: Callable[[LoadedConfig], Awaitable[None]],
        on_invalid: Callable[[str], None],
        interval: float = 1.0,
    ) -> None:
        self._path = path
        self._seen_hash = current_hash
        self._apply = apply
        self._on_invalid = on_invalid
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="aegis-config-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check_once(self) -> None:
        """Read the config once; apply it if it changed and is valid."""
        try:
            source = resolve_config_file(self._path)
            raw = await asyncio.to_thread(source.read_bytes)
        except (ConfigError, OSError) as exc:
            message = str(exc)
            if message != self._seen_hash:
                self._seen_hash = message
                self._on_invalid(message)
            return
        digest = content_hash(raw)
        if digest == self._seen_hash:
            return
        self._seen_hash = digest
        try:
            loaded = parse_config(raw, source)
        except ConfigError as exc:
            self._on_invalid(str(exc))
            return
        await self._apply(loaded)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_once()
            except Exception:  # the watcher must outlive any single bad reload
                log.exception("config reload failed")
