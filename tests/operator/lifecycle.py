"""Set-up shared by every package that runs the operator (tests/operator, tests/rollout).

Plain generator functions rather than fixtures: each package wraps them in fixtures
of its own scope and options.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aegis.sidecar.ledger.migrate import migrate
from tests.controlplane.kube import Kube
from tests.controlplane.postgres import PostgresServer
from tests.operator.harness import OperatorProcess, install_crds, remove_crds


def installed_crds(kube: Kube) -> Iterator[None]:
    install_crds(kube)
    yield
    remove_crds(kube)


def migrated_ledger(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database migrated to head (as the chart's migration job does)."""
    url = postgres.create_database()
    migrate(url)
    yield url
    postgres.start()  # a test may have left it stopped
    postgres.drop_database(url.rsplit("/", 1)[1])


def operator_process(
    kube: Kube, workdir: Path, ledger_dsn: str, **options: Any
) -> Iterator[OperatorProcess]:
    """One operator process with its own platform namespace, stopped afterwards."""
    platform = kube.create_namespace("aegis-system")
    process = OperatorProcess(
        kube=kube,
        workdir=workdir,
        ledger_dsn=ledger_dsn,
        platform_namespace=platform,
        **options,
    )
    process.start()
    yield process
    process.stop()
    kube.delete_namespace(platform)


def running(process: OperatorProcess) -> OperatorProcess:
    """The process, started again first if an earlier test left it stopped."""
    if not process.running:
        process.start()
    return process
