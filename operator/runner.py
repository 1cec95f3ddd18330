"""``aegis operator``: kopf in this process, with production settings.

One replica, no peering (``standalone``): kopf's peering only pauses operators
that see a higher-priority peer, it is not leader election, and it needs its own
CRDs and RBAC. The Deployment runs one replica with the ``Recreate`` strategy,
so two operators never reconcile at once. A restart costs seconds and loses
nothing: the operator is not on any request path (sidecars keep their mounted
config, the injector runs separately with several replicas) and every
reconcile is level-triggered from the API's state (on start-up kopf resumes
every object, runs update handlers for changes made while it was down and
delete handlers for objects that wait on the finalizer).

Other production choices: the liveness endpoint is kopf's own (``/healthz``);
logs are JSON lines (set up by the ``aegis`` command before this starts); SIGTERM
stops watching, lets running handlers finish and then closes the API session,
the ledger engine and the metrics server; kopf's bookkeeping goes to
annotations with the ``operator.aegis.io`` prefix (the status schema is
strict, so nothing is stored in ``status.kopf``); CRDs are not scanned (no
cluster-wide CRD read access needed), so they must exist before the operator
starts; watches are re-established every few minutes so a silently dropped
connection cannot stall the operator.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import kopf

from aegis.sidecar.ledger.db import create_engine

from .api import naming
from .controllers import MEMO_KEY, Context, Options
from .controllers.partitions import keep_partitions
from .handlers import register
from .kube import KubeClient, load_config
from .metrics import OperatorMetrics, start_metrics_server
from .tracing import reconcile_tracer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunConfig:
    namespaces: Sequence[str]  # empty: every namespace
    options: Options
    health_host: str = "0.0.0.0"
    health_port: int = 8080
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9090
    ledger_dsn: str | None = None  # the read-only role
    control_dsn: str | None = None  # the control role: limits, tenants


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=naming.KOPF_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=naming.KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.reporting_component = naming.MANAGED_BY
    settings.posting.reporting_instance = os.environ.get("POD_NAME") or socket.gethostname()
    settings.posting.event_name_prefix = "aegis-"
    # Only our explicit events (kopf.event) and kopf's warnings/errors become Events,
    # not "Handler succeeded" for every reconcile.
    settings.posting.level = logging.WARNING
    settings.watching.connect_timeout = 30
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # An object is finalized only once its timers have stopped. A timer caught mid-run
    # by the deletion (a sync waiting on the ledger) is looked at again after this
    # many seconds; kopf's default, 60, held every such delete for a minute.
    settings.background.cancellation_polling = 1.0
    return settings


async def run(config: RunConfig) -> None:
    """Run until SIGTERM/SIGINT; resources are released in reverse order."""
    metrics = OperatorMetrics()
    runner, bound = await start_metrics_server(metrics, config.metrics_host, config.metrics_port)
    log.info("metrics on %s:%d/metrics", config.metrics_host, bound)
    ledger = create_engine(config.ledger_dsn, create=False) if config.ledger_dsn else None
    if ledger is None:
        log.warning("%s is not set: LLMBudget status cannot be read", naming.LEDGER_DSN_ENV)
    control = (
        create_engine(config.control_dsn, create=False, isolation_level="AUTOCOMMIT")
        if config.control_dsn
        else None
    )
    if control is None and ledger is not None:
        log.warning(
            "%s is not set: budget limits are not written; sidecars cannot spend",
            naming.LEDGER_CONTROL_DSN_ENV,
        )
    # The ledger's months ahead (the control role may create them): see controllers.partitions.
    ahead = asyncio.create_task(keep_partitions(control)) if control is not None else None
    kube = KubeClient(load_config(), agent=naming.MANAGED_BY)
    ctx = Context(
        kube=kube, ledger=ledger, metrics=metrics, options=config.options, control=control
    )
    registry = kopf.OperatorRegistry()
    options = config.options
    tracer = reconcile_tracer(os.environ)  # None unless OTEL_* turns traces on
    register(
        registry, options.budget_interval, options.resync_interval, options.rollout_tick, tracer
    )
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings(),
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=f"http://{config.health_host}:{config.health_port}/healthz",
            memo=kopf.Memo({MEMO_KEY: ctx}),
        )
    finally:
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
        await kube.close()
        for engine in (ledger, control):
            if engine is not None:
                await engine.dispose()
        await runner.cleanup()
        if tracer is not None:
            await tracer.aclose()
        log.info("operator stopped")


def main(config: RunConfig) -> int:
    # kopf logs every handler outcome at INFO through its object loggers.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # liveness probes
    asyncio.run(run(config))
    return 0
