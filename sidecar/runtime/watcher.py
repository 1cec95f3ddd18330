"""Reading the sidecar config from a YAML file or a mounted ConfigMap directory.

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

from ..contract.document import ConfigError, LoadedConfig, content_hash, parse_config

log = logging.getLogger(__name__)

CONFIG_FILE_NAMES = ("config.yaml", "config.yml", "sidecar.yaml")


def resolve_config_file(path: Path) -> Path:
    """The YAML file to read: ``path`` itself, or the config file inside a directory."""
    if not path.is_dir():
        return path
    for name in CONFIG_FILE_NAMES:
        candidate = path / name
        if candidate.is_file():
            return candidate
    yamls = sorted(p for p in path.glob("*.y*ml") if not p.name.startswith("."))
    if len(yamls) == 1:
        return yamls[0]
    raise ConfigError(
        f"{path}: expected one of {', '.join(CONFIG_FILE_NAMES)} in the config directory"
    )


def load_config(path: Path) -> LoadedConfig:
    source = resolve_config_file(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    return parse_config(raw, source)


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
