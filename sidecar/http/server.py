"""Running a sidecar: sockets on the loopback address, signals, graceful stop.

``handler_cancellation`` is on so that a client hanging up cancels its handler,
which closes the upstream call and settles the budget reservation. On SIGTERM the
listener closes first, in-flight requests get ``shutdown_timeout`` to finish, and
only then are adapters closed and the ledger flushed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..contract import LoadedConfig, load_config
from ..runtime import Runtime
from .app import build_app, build_metrics_app

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunningSidecar:
    runtime: Runtime
    base_url: str
    """``http://127.0.0.1:PORT/v1``: what an OpenAI client uses."""
    port: int
    metrics_port: int | None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (the ``fast`` extra; the image has it),
    else asyncio's: the same program, with less CPU per request on uvloop's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _bound_port(site: web.TCPSite) -> int:
    # asyncio's Server or uvloop's: both have ``sockets``, which AbstractServer lacks.
    sockets = getattr(site._server, "sockets", None)
    assert sockets
    port: int = sockets[0].getsockname()[1]
    return port


@asynccontextmanager
async def serve(
    loaded: LoadedConfig,
    *,
    config_path: Path | None = None,
    port: int | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    reload_interval: float = 1.0,
    shutdown_timeout: float = 30.0,
) -> AsyncIterator[RunningSidecar]:
    """Start a sidecar in this event loop; ``port=0`` picks a free port."""
    runtime = Runtime(loaded, config_path=config_path, reload_interval=reload_interval)
    listen = loaded.config.listen
    await runtime.start()
    runner = web.AppRunner(
        build_app(runtime),
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
        access_log=None,
        # One header line may take up to twice the sidecar's own bound, so that a
        # request over it mostly gets the JSON 431 rather than the parser's plain 400.
        max_field_size=2 * listen.limits.max_header_bytes,
    )
    await runner.setup()
    metrics_runner: web.AppRunner | None = None
    try:
        site = web.TCPSite(runner, listen.host, listen.port if port is None else port)
        await site.start()
        bound_metrics: int | None = None
        # config metricsPort 0 disables metrics; an explicit override always serves
        # them (0 then picks a free port, as for the API port).
        wanted_metrics = listen.metrics_port if metrics_port is None else metrics_port
        if metrics_port is not None or wanted_metrics:
            metrics_runner = web.AppRunner(build_metrics_app(runtime), access_log=None)
            await metrics_runner.setup()
            metrics_site = web.TCPSite(
                metrics_runner, metrics_host or listen.metrics_host, wanted_metrics
            )
            await metrics_site.start()
            bound_metrics = _bound_port(metrics_site)
        bound = _bound_port(site)
        yield RunningSidecar(runtime, f"http://{listen.host}:{bound}/v1", bound, bound_metrics)
    finally:
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runtime.aclose()


# Thresholds of the cyclic garbage collector while serving (the defaults are 700,
# 10, 10). Every request allocates a few hundred container objects, and the ones
# still alive at a collection (requests in flight) are promoted and traversed again
# by the older generations; a larger young generation is collected ~4x less often,
# when most of a request's objects have long been freed by reference counting.
# Measured in tests/bench (c=32), with tune_gc(): collector CPU ~60 us -> ~5 us per
# request, and no more ~40 ms full collections landing in a request's latency.
GC_THRESHOLDS = (5000, 20, 10)


def tune_gc() -> None:
    """Once serving: collect, then freeze what start-up built (modules, config, compiled
    SQL: about 100k objects that live as long as the process) so that collections no
    longer traverse it (a full collection took ~40 ms before, well under 1 ms after),
    and collect the young generation less often. Only for a sidecar process
    (``run_forever``): tests that start several sidecars in one interpreter keep the
    interpreter's defaults."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.enable()  # in case the entry point disabled it while importing


async def run_forever(
    config_path: Path,
    port: int | None,
    metrics_port: int | None,
    metrics_host: str | None = None,
) -> None:
    started = time.perf_counter()
    loaded = load_config(config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        loaded,
        config_path=config_path,
        port=port,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    ) as running:
        tune_gc()
        log.info(
            "aegis sidecar ready on %s (metrics port %s, config %s, route %s) in %.0f ms",
            running.base_url,
            running.metrics_port,
            loaded.hash,
            loaded.config.identity.route,
            (time.perf_counter() - started) * 1000,
        )
        await stop.wait()
        log.info("stopping: draining in-flight requests")
