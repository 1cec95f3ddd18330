"""An informer-style cache of LLMRoutes: one list, then a watch, kept in memory.

Admission must answer in milliseconds, and an API call per pod creation would put
the API server's latency (and load) on every pod; instead every review reads this
cache. Staleness is bounded by watch delivery (typically milliseconds); bookmarks
keep the resource version fresh, a 410 Gone re-lists, and errors retry with a
capped backoff; a watch that delivers nothing for longer than its server-side
timeout (plus a margin) is renewed, so a silently dropped connection cannot freeze
the cache. Until the first list succeeds :meth:`RouteCache.routes` returns
``None`` and opted-in pods are refused ("not ready") rather than run without a
sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..kube import Gone, KubeClient, KubeError, LLMRoute
from .route_choice import RouteInfo, route_info

log = logging.getLogger(__name__)

#: Seconds past the server-side watch timeout before a silent watch is renewed.
_IDLE_MARGIN = 30


class RouteSource(Protocol):
    def routes(self, namespace: str) -> Sequence[RouteInfo] | None: ...


class StaticRoutes:
    """A fixed set of routes (benchmarks, unit tests of the server)."""

    def __init__(self, routes: Iterable[RouteInfo]) -> None:
        self._by_ns: dict[str, list[RouteInfo]] = {}
        for route in routes:
            self._by_ns.setdefault(route.namespace, []).append(route)

    def routes(self, namespace: str) -> Sequence[RouteInfo] | None:
        return self._by_ns.get(namespace, [])


class RouteCache:
    """LLMRoutes of all namespaces, by namespace and name."""

    def __init__(
        self,
        api: KubeClient,
        *,
        on_change: Callable[[int, bool], None] | None = None,
        watch_timeout: int = 300,
    ) -> None:
        self._api = api
        self._by_ns: dict[str, dict[str, RouteInfo]] = {}
        self._synced = False
        self._on_change = on_change
        self._watch_timeout = watch_timeout
        self.last_error: str | None = None
        self.synced_event = asyncio.Event()

    @property
    def synced(self) -> bool:
        return self._synced

    def routes(self, namespace: str) -> Sequence[RouteInfo] | None:
        if not self._synced:
            return None
        return list(self._by_ns.get(namespace, {}).values())

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_ns.values())

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(len(self), self._synced)

    def _upsert(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        info = route_info(obj)
        if info is None:
            self._remove(namespace, name)
            return
        self._by_ns.setdefault(namespace, {})[name] = info

    def _remove(self, namespace: str, name: str) -> None:
        routes = self._by_ns.get(namespace)
        if routes is not None:
            routes.pop(name, None)
            if not routes:
                del self._by_ns[namespace]

    async def _list(self) -> str:
        items, version = await self._api.list(LLMRoute)
        self._by_ns = {}
        for item in items:
            self._upsert(item)
        self._synced = True
        self.last_error = None
        self.synced_event.set()
        self._changed()
        log.info("LLMRoute cache synced: %d routes", len(self))
        return version

    async def _watch(self, version: str) -> str | None:
        """Apply events until the watch goes silent; the version to resume from,
        ``None``: re-list."""
        idle = self._watch_timeout + _IDLE_MARGIN
        loop = asyncio.get_running_loop()
        stream = self._api.watch(LLMRoute, since=version, server_timeout=self._watch_timeout)
        try:
            async with asyncio.timeout(idle) as silence:
                async for kind, obj in stream:
                    silence.reschedule(loop.time() + idle)
                    meta = obj.get("metadata") or {}
                    version = str(meta.get("resourceVersion") or version)
                    if kind in ("ADDED", "MODIFIED"):
                        self._upsert(obj)
                    elif kind == "DELETED":
                        self._remove(meta.get("namespace", ""), meta.get("name", ""))
                    self._changed()
        except TimeoutError:
            return version  # nothing for a whole server timeout: renew the watch
        except Gone as error:
            log.info("watch ended by the server: %s", error.message)
            return None  # the version was compacted: start over with a list
        finally:
            await stream.aclose()
        return version

    async def run(self) -> None:
        """List and watch forever (cancel to stop)."""
        delay = 0.5
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                delay = 0.5
            except (KubeError, ValueError, KeyError) as exc:
                self.last_error = str(exc)
                log.warning("LLMRoute cache: %s (retrying in %.1fs)", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30.0)

    async def wait_synced(self, within: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self.synced_event.wait()
        return self._synced
