"""The webhook server: HTTPS admission endpoints, plain-HTTP metrics and health.

The request path does no I/O besides the HTTP exchange itself: the body is decoded,
:func:`admission.decide` runs against the in-memory route cache, the answer is encoded.
Everything slow (listing routes, certificates, caBundle) runs in background tasks.

Ports: HTTPS ``--port`` serves ``/inject/pod`` and ``/inject/namespace`` (and health,
for ``kubectl port-forward`` checks); ``--metrics-port`` serves ``/metrics``,
``/healthz`` and ``/readyz`` over plain HTTP for Prometheus and the kubelet.
Readiness means "a certificate is loaded and the LLMRoute cache is synced", so a
Service only sends reviews to replicas that can answer them correctly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..kube import KubeClient, KubeError, load_config
from . import certs, review
from .admission import AdmissionDecision, Via, decide
from .cache import RouteCache, RouteSource
from .manifests import NAMESPACE_PATH, POD_PATH
from .metrics import InjectorMetrics
from .settings import (
    InjectorSettings,
    SidecarSettings,
    injector_version,
    native_sidecar_supported,
)
from .tls import FileTls, SecretTls, ServingTls

log = logging.getLogger(__name__)


class Injector:
    """What the admission endpoints need: routes, sidecar settings, metrics."""

    def __init__(
        self,
        routes: RouteSource,
        sidecar: SidecarSettings,
        *,
        native: bool,
        never_injected: frozenset[str],
        metrics: InjectorMetrics | None = None,
        ready: Callable[[], bool] = lambda: True,
        version: str | None = None,
    ) -> None:
        self.routes = routes
        self.sidecar = sidecar
        self.native = native
        self.never_injected = never_injected
        self.metrics = metrics or InjectorMetrics()
        self.ready = ready
        self.version = version or injector_version()

    def answer(self, body: bytes, via: Via) -> tuple[int, dict[str, object]]:
        """``(HTTP status, JSON body)`` for one AdmissionReview POST."""
        started = time.perf_counter()
        try:
            uid, request = review.parse(json.loads(body))
        except (ValueError, review.BadReview) as exc:
            return 400, {"error": f"not an AdmissionReview v1 request: {exc}"}
        try:
            decision = decide(
                request,
                via,
                self.routes.routes(request.namespace),
                self.sidecar,
                native=self.native,
                version=self.version,
                never_injected=self.never_injected,
            )
        except Exception:  # a bug must refuse (visible), never inject half or crash
            log.exception("decision failed for pod %s/%s", request.namespace, request.name)
            decision = AdmissionDecision("refused", "error", "internal error in the Aegis injector")
        self.metrics.admissions.labels(decision.outcome, decision.reason).inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        if decision.outcome != "skipped":
            log.info(
                "%s pod %s/%s (%s)%s",
                decision.outcome,
                request.namespace,
                request.name,
                decision.route or decision.reason,
                f": {decision.message}" if decision.message else "",
            )
        return 200, review.response(uid, decision)


INJECTOR = web.AppKey("injector", Injector)


def _handler(via: Via) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        status, body = request.app[INJECTOR].answer(await request.read(), via)
        return web.json_response(body, status=status)

    return handle


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready = request.app[INJECTOR].ready()
    return web.json_response({"ready": ready}, status=200 if ready else 503)


def build_app(injector: Injector) -> web.Application:
    """The HTTPS application the API server calls."""
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[INJECTOR] = injector
    app.router.add_post(POD_PATH, _handler("pod"))
    app.router.add_post(NAMESPACE_PATH, _handler("namespace"))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def build_metrics_app(injector: Injector) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        payload = generate_latest(injector.metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app[INJECTOR] = injector
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@dataclass
class Running:
    port: int
    metrics_port: int | None
    injector: Injector
    cache: RouteCache
    serving: ServingTls


def _bound_port(site: web.TCPSite) -> int:
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    port: int = server.sockets[0].getsockname()[1]
    return port


def _policy(settings: InjectorSettings) -> certs.Policy:
    s = settings.server
    return certs.Policy(
        sans=s.dns_names,
        leaf_validity=s.leaf_validity,
        leaf_renew_before=s.leaf_renew_before,
        ca_validity=s.ca_validity,
        ca_renew_before=s.ca_renew_before,
        ca_propagation=s.ca_propagation,
    )


async def _server_version(api: KubeClient) -> dict[str, Any]:
    """``GET /version``, retried until the API server answers (it may start after us)."""
    delay = 0.5
    while True:
        try:
            return await api.server_version()
        except KubeError as exc:
            log.warning("API server not reachable yet: %s (retrying in %.1fs)", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)


@asynccontextmanager
async def serve(
    settings: InjectorSettings, api: KubeClient | None = None
) -> AsyncIterator[Running]:
    """Run the injector in this event loop until the context exits."""
    server = settings.server
    api = api or KubeClient(load_config(server.kubeconfig), agent="aegis-injector", timeout=10.0)
    metrics = InjectorMetrics()
    tasks: list[asyncio.Task[None]] = []
    runners: list[web.AppRunner] = []
    try:
        version = await _server_version(api)  # discovered once: decides native sidecars
        native = native_sidecar_supported(settings.sidecar.native, version)
        log.info("API server %s: native sidecar %s", version.get("gitVersion"), native)
        cache = RouteCache(api, on_change=metrics.routes_changed)
        serving = ServingTls(on_load=metrics.certificate_loaded)
        injector = Injector(
            cache,
            settings.sidecar,
            native=native,
            never_injected=server.never_injected,
            metrics=metrics,
            ready=lambda: cache.synced and serving.loaded.is_set(),
        )
        tls_task: SecretTls | FileTls
        if server.tls_mode == "files":
            assert server.cert_dir is not None
            tls_task = FileTls(serving, server.cert_dir, server.tls_check_interval)
        else:
            tls_task = SecretTls(
                api, serving, namespace=server.namespace, secret=server.tls_secret,
                policy=_policy(settings), webhook_config=server.webhook_config,
                interval=server.tls_check_interval,
            )  # fmt: skip
        tasks += [
            asyncio.create_task(cache.run(), name="aegis-route-cache"),
            asyncio.create_task(tls_task.run(), name="aegis-tls"),
        ]
        metrics_port: int | None = None
        if server.metrics_port > 0:
            runner = web.AppRunner(build_metrics_app(injector), access_log=None)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, server.listen_host, server.metrics_port)
            await site.start()
            metrics_port = _bound_port(site)
        await serving.loaded.wait()  # HTTPS needs a certificate before it can listen
        runner = web.AppRunner(build_app(injector), access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, server.listen_host, server.port, ssl_context=serving.context)
        await site.start()
        yield Running(_bound_port(site), metrics_port, injector, cache, serving)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in reversed(runners):
            await runner.cleanup()
        await api.close()


async def run_forever(settings: InjectorSettings) -> None:
    """Serve until SIGTERM/SIGINT; a signal during start-up (no API server yet, no
    certificate yet) stops at once instead of waiting for start-up to finish."""
    stop = asyncio.Event()
    started = False

    async def main() -> None:
        nonlocal started
        async with serve(settings) as running:
            started = True
            synced = await running.cache.wait_synced(30.0)
            log.info(
                "aegis injector listening on https://%s:%d (metrics %s, routes synced: %s)",
                settings.server.listen_host,
                running.port,
                running.metrics_port,
                synced,
            )
            await stop.wait()
            # Endpoints lag behind a terminating pod: fail readiness, keep answering a while.
            running.injector.ready = lambda: False
            log.info("stopping in %.1fs", settings.server.shutdown_delay)
            await asyncio.sleep(settings.server.shutdown_delay)

    task = asyncio.create_task(main(), name="aegis-injector")

    def on_signal() -> None:
        stop.set()
        if not started:
            task.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    with contextlib.suppress(asyncio.CancelledError):
        await task
