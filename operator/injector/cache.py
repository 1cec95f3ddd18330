"""An informer-style cache of LLMRoutes: one list, then a watch, kept in memory.

Admission must answer in milliseconds, and an API call per pod creation would put
the API server's latency (and load) on every pod; instead every review reads this
cache. Staleness is bounded by watch delivery (typically milliseconds); bookmarks
keep the resource version fresh, a 410 Gone re-lists, and errors retry with a
capped backoff. Until the first list succeeds :meth:`RouteCache.routes` returns
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

import aiohttp

from ..api.naming import GROUP, VERSION
from ..kube.injector_client import ApiError, KubeApi
from .routes import RouteInfo, route_info

log = logging.getLogger("aegis.injector.cache")

ROUTES_PATH = f"/apis/{GROUP}/{VERSION}/llmroutes"


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
        api: KubeApi,
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
        body = await self._api.get(ROUTES_PATH)
        self._by_ns = {}
        for item in body.get("items") or []:
            self._upsert(item)
        self._synced = True
        self.last_error = None
        self.synced_event.set()
        self._changed()
        log.info("LLMRoute cache synced: %d routes", len(self))
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str | None:
        """Apply events until the watch ends; the version to resume from, ``None``: re-list."""
        async for event in self._api.watch(ROUTES_PATH, version, self._watch_timeout):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                log.info("watch ended by the server: %s", obj.get("message"))
                return None  # 410 Gone (compacted) and friends: start over with a list
            meta = obj.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED"):
                self._upsert(obj)
            elif kind == "DELETED":
                self._remove(meta.get("namespace", ""), meta.get("name", ""))
            if kind != "BOOKMARK":
                self._changed()
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
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                self.last_error = str(exc)
                if isinstance(exc, ApiError) and exc.status == 410:
                    version = None
                log.warning("LLMRoute cache: %s (retrying in %.1fs)", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30.0)

    async def wait_synced(self, within: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self.synced_event.wait()
        return self._synced
