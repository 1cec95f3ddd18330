"""The rollout test bed: the route, its ConfigMap mirrored into sidecars, and traffic.

What runs for real: the API server (CRDs, CEL), the operator process (with the
minimal RBAC of ``operator/rbac.yaml``), Postgres (the shared ledger), sidecar
processes and fake upstream processes (forked by the sidecar tests' zygote, which
runs exactly what ``aegis sidecar`` runs). What a cluster would add is imitated:
there is no kubelet, so :class:`ConfigMirror` does its job for the rendered
ConfigMap, polling it and rewriting the file a sidecar reads (atomically, like
the kubelet's ``..data`` swap); the sidecar's own hot reload does the rest.

Everything is asynchronous (one event loop: sidecar fleet, traffic, API reads);
waits poll a condition with a deadline (:func:`until`), never sleep for
correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml
from lightkube.resources.core_v1 import Event
from sqlalchemy import text

from aegis.operator.api import naming
from aegis.operator.kube import Body, ConfigMap, KubeClient, LLMRoute, Secret, load_config
from aegis.sidecar.ledger.db import create_engine
from tests.sidecar.fleet import Fleet
from tests.sidecar.tenancy import tenant_url

T = TypeVar("T")
API = f"{naming.GROUP}/{naming.VERSION}"
CANARY_KEY = "test-canary-key"


async def until(
    check: Callable[[], Awaitable[T | None]], *, within: float, what: str, every: float = 0.2
) -> T:
    """Await ``check`` until it returns something other than None/False, at most
    ``within`` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            result = await check()
        except AssertionError as error:
            result, last = None, error
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}; last: {last}")
        await asyncio.sleep(every)  # poll interval; the deadline is checked above


async def metric_reaches(
    read: Callable[..., float | None], name: str, value: float, **labels: str
) -> None:
    """Poll an operator metric (``OperatorProcess.metric``) until it has ``value``."""

    async def check() -> bool:
        return read(name, **labels) == value

    await until(check, within=10, what=f"{name}{labels} == {value}")


def admin_client(kubeconfig: Path) -> KubeClient:
    """The operator's own API client, logged in with the test bed's admin kubeconfig
    (client certificate or token)."""
    return KubeClient(load_config(kubeconfig), agent="aegis-rollout-tests")


class ConfigMirror:
    """What the kubelet does for a ConfigMap volume: keep ``<dir>/config.yaml`` equal
    to the ConfigMap's data, rewriting it (atomically) whenever it changes."""

    def __init__(self, api: KubeClient, namespace: str, route: str, directory: Path) -> None:
        self.api = api
        self.namespace = namespace
        self.name = naming.configmap_name(route)
        self.directory = directory
        self.written = ""
        self._task: asyncio.Task[None] | None = None

    async def sync_once(self) -> bool:
        found = await self.api.get(ConfigMap, self.name, namespace=self.namespace)
        content = ((found or {}).get("data") or {}).get(naming.CONFIG_KEY)
        if not content:
            return False
        if content != self.written:
            self.directory.mkdir(parents=True, exist_ok=True)
            staging = self.directory / ".config.yaml.new"
            staging.write_text(content)
            os.replace(staging, self.directory / naming.CONFIG_KEY)
            self.written = content
        return True

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a kubelet keeps trying, too
                await self.sync_once()
            await asyncio.sleep(0.2)  # deliberate pacing: a kubelet's sync period

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class Reply:
    user: str
    sidecar: int
    status: int
    arm: str | None


async def chat(session: aiohttp.ClientSession, url: str, user: str, sidecar: int) -> Reply:
    body = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(
        f"{url}/v1/chat/completions", json=body, headers={"X-Aegis-User": user}
    ) as response:
        await response.read()
        return Reply(user, sidecar, response.status, response.headers.get("X-Aegis-Arm"))


@dataclass
class Traffic:
    """Chat requests through the sidecars in turn, at about ``rate`` per second in
    total, each from one of ``users`` user keys, until stopped."""

    urls: Sequence[str]
    rate: float = 60.0
    users: int = 400
    concurrency: int = 8
    arms: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _worker(self, session: aiohttp.ClientSession, numbers: Any, start: float) -> None:
        for i in numbers:
            due = start + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # deliberate pacing: a fixed request rate
            sidecar = i % len(self.urls)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                reply = await chat(session, self.urls[sidecar], f"user-{i % self.users}", sidecar)
                self.statuses[reply.status] += 1
                self.arms[reply.arm or "none"] += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Traffic]:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            numbers = itertools.count()
            start = time.monotonic()
            self._tasks = [
                asyncio.create_task(self._worker(session, numbers, start))
                for _ in range(self.concurrency)
            ]
            try:
                yield self
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)


def route_manifest(
    name: str,
    urls: dict[str, str],
    rollout: dict[str, Any],
    *,
    canary_pricing: dict[str, Any] | None = None,
) -> Body:
    """A route whose stable policy answers from a local (Ollama) fake and whose
    candidate sends everything to the ``canary`` provider (an OpenAI fake) with no
    retries and no fallback, so the canary's failures are the candidate's."""
    canary: Body = {
        "name": "canary",
        "type": "openai",
        "baseURL": urls["canary"],
        "apiKeySecretRef": {"name": "canary", "key": "apiKey"},
        "models": {"default": "gpt-4o-mini"},
        "maxRetries": 0,
    }
    if canary_pricing is not None:
        canary["pricing"] = canary_pricing
    return {
        "apiVersion": API,
        "kind": naming.ROUTE_KIND,
        "metadata": {"name": name},
        "spec": {
            "providers": [
                {"name": "local", "type": "ollama", "baseURL": urls["local"],
                 "models": {"default": "gemma3:4b"}},
                canary,
            ],
            "default": {"provider": "local"},
            "rollout": {"candidate": {"default": {"provider": "canary"}}, **rollout},
        },
    }  # fmt: skip


@dataclass
class RolloutBed:
    """One route in one namespace, with its fakes, sidecars and mirrors."""

    api: KubeClient
    fleet: Fleet
    namespace: str
    ledger_dsn: str
    workdir: Path
    urls: dict[str, str] = field(default_factory=dict)
    sidecars: list[str] = field(default_factory=list)
    mirrors: list[ConfigMirror] = field(default_factory=list)
    tenant_dsn: str | None = None

    async def start_fakes(self, canary_knobs: dict[str, Any] | None = None) -> None:
        """A local Ollama fake (stable) and an OpenAI fake ``canary`` (candidate)."""
        await asyncio.gather(
            self.fleet.spawn("local", "ollama"), self.fleet.spawn("canary", "openai")
        )
        self.urls = {"local": self.fleet.url("local"), "canary": self.fleet.url("canary") + "/v1"}
        if canary_knobs:
            await self.knobs("canary", canary_knobs)

    async def knobs(self, fake: str, values: dict[str, Any]) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.fleet.url(fake)}/_fake/knobs", json=values) as response,
        ):
            assert response.status == 200, await response.text()

    async def create_route(self, manifest: Body) -> None:
        secret = {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "canary", "namespace": self.namespace},
            "stringData": {"apiKey": CANARY_KEY},
        }  # fmt: skip
        await self.api.create(Secret, secret)
        meta = {**manifest["metadata"], "namespace": self.namespace}
        await self.api.create(LLMRoute, {**manifest, "metadata": meta})

    async def route(self, name: str) -> Body:
        found = await self.api.get(LLMRoute, name, namespace=self.namespace)
        assert found is not None, f"LLMRoute {name} is gone"
        return found

    async def rollout(self, name: str) -> Body:
        return dict(((await self.route(name)).get("status") or {}).get("rollout") or {})

    async def patch_rollout(self, name: str, fields: Body) -> None:
        patch = {"spec": {"rollout": fields}}
        await self.api.merge_patch(LLMRoute, name, patch, namespace=self.namespace)

    async def annotate(self, name: str, key: str, value: str) -> None:
        patch = {"metadata": {"annotations": {key: value}}}
        await self.api.merge_patch(LLMRoute, name, patch, namespace=self.namespace)

    async def wait_rollout(self, name: str, *, within: float = 30.0, **wanted: Any) -> Body:
        """Poll ``status.rollout`` until each given field has the given value."""

        async def check() -> Body | None:
            state = await self.rollout(name)
            return state if all(state.get(k) == v for k, v in wanted.items()) else None

        return await until(check, within=within, what=f"{name} status.rollout {wanted}")

    async def start_sidecars(self, route: str, count: int) -> list[str]:
        """``count`` sidecars, each with its own mirrored copy of the route's ConfigMap."""
        await until(lambda: self.configmap(route), within=30, what="the rendered ConfigMap")
        if self.tenant_dsn is None:  # the namespace's own ledger role, as in a cluster
            self.tenant_dsn = await tenant_url(self.ledger_dsn, self.namespace)
        dsn = self.tenant_dsn

        async def one(i: int) -> str:
            directory = self.workdir / f"{route}-sidecar-{i}"
            mirror = ConfigMirror(self.api, self.namespace, route, directory)
            await mirror.sync_once()
            mirror.start()
            self.mirrors.append(mirror)
            env = {
                "AEGIS_LEDGER_DSN": dsn,
                "AEGIS_KEY_CANARY": CANARY_KEY,
                "POD_NAME": f"{route}-{i}",
                "AEGIS_SPOOL_DIR": str(self.workdir / "spool"),
            }
            name = f"{route}-sidecar-{i}"
            await self.fleet.spawn(name, "sidecar", config=directory, env=env)
            return self.fleet.url(name)

        self.sidecars = list(await asyncio.gather(*(one(i) for i in range(count))))
        return self.sidecars

    async def configmap(self, route: str) -> dict[str, Any] | None:
        found = await self.api.get(
            ConfigMap, naming.configmap_name(route), namespace=self.namespace
        )
        content = ((found or {}).get("data") or {}).get(naming.CONFIG_KEY)
        return None if not content else dict(yaml.safe_load(content))

    async def sidecars_current(self, route: str) -> bool:
        """True once every sidecar runs the config of the route's ``status.configHash``
        (the hash a sidecar reports on ``/readyz`` is the same content hash)."""
        wanted = ((await self.route(route)).get("status") or {}).get("configHash")
        async with aiohttp.ClientSession() as session:
            for url in self.sidecars:
                async with session.get(f"{url}/readyz") as response:
                    info = json.loads(await response.text() or "{}")
                if info.get("config", {}).get("hash") != wanted:
                    return False
        return True

    async def events(self, name: str) -> list[Body]:
        listed, _ = await self.api.list(Event, namespace=self.namespace)
        about = [e for e in listed if (e.get("involvedObject") or {}).get("name") == name]
        # kopf stamps eventTime (microseconds) in the order it posts them
        return sorted(about, key=lambda e: str(e.get("eventTime") or ""))

    async def wait_events(self, name: str, *reasons: str) -> list[Body]:
        """The route's events, once one of each reason is among them (kopf posts them
        from a queue, a moment after the change they announce)."""

        async def check() -> list[Body] | None:
            found = await self.events(name)
            have = {e.get("reason") for e in found}
            return found if all(r in have for r in reasons) else None

        return await until(check, within=10, what=f"events {reasons} of {name}")

    async def arm_counts(
        self, route: str, since: datetime | None = None, *, by: str = "arm"
    ) -> Counter[str]:
        """Ledger rows of ``route`` in this bed's namespace by arm, or by pod, of requests
        that began at or after ``since`` (a row's ``created_at`` is when the request
        ended). The ledger is shared by the package's tests: another test's route of the
        same name lives in another namespace."""
        assert by in ("arm", "pod")
        sql = (
            f"SELECT {by}, count(*) FROM aegis.ledger_entries "
            "WHERE route = :route AND namespace = :namespace"
        )
        params: dict[str, Any] = {"route": route, "namespace": self.namespace}
        if since is not None:
            sql += " AND created_at - latency_ms * interval '1 millisecond' >= :since"
            params["since"] = since
        engine = create_engine(self.ledger_dsn)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(text(f"{sql} GROUP BY {by}"), params)
                return Counter({str(key): int(n) for key, n in rows})
        finally:
            await engine.dispose()

    async def close(self) -> None:
        for mirror in self.mirrors:
            await mirror.stop()
