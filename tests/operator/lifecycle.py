"""Set-up shared by every package that runs the operator (tests/operator, tests/rollout).

Plain generator functions rather than fixtures: each package wraps them in fixtures
of its own scope and options.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aegis.sidecar.commands import run_ledger
from tests.controlplane.kube import Kube
from tests.controlplane.postgres import PostgresServer
from tests.operator.harness import OperatorProcess, install_crds, remove_aegis_objects


def installed_crds(kube: Kube) -> Iterator[None]:
    """The CRDs for a package; the Aegis objects it left are removed afterwards."""
    install_crds(kube)
    yield
    remove_aegis_objects(kube)


def migrated_ledger(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database migrated to head, with the operator's read-only and control
    roles granted (as the chart's migration job does); the superuser's URL."""
    url = postgres.create_database()
    database = url.rsplit("/", 1)[1]
    for role in operator_roles(url):
        postgres.psql(f"CREATE ROLE {role} LOGIN")
    reader, control = operator_roles(url)
    # As the chart's migration job runs it: migrate, then grant the operator's roles.
    assert (
        run_ledger("migrate", config=None, url=url, grant_control=control, grant_reader=reader) == 0
    )
    yield url
    postgres.start()  # a test may have left it stopped
    postgres.drop_database(database)
    for role in operator_roles(url):
        postgres.psql(f"DROP OWNED BY {role}; DROP ROLE {role}")


def operator_roles(url: str) -> tuple[str, str]:
    """The read-only and control roles of the ledger at ``url``."""
    database = url.rsplit("/", 1)[1]
    return f"{database}_reader", f"{database}_control"


def as_role(url: str, role: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://{role}@")


def operator_process(
    kube: Kube, workdir: Path, ledger_dsn: str, **options: Any
) -> Iterator[OperatorProcess]:
    """One operator process with its own platform namespace, stopped afterwards; it
    reads the ledger at ``ledger_dsn`` as its read-only role and writes limits as its
    control role."""
    platform = kube.create_namespace("aegis-system")
    reader, control = operator_roles(ledger_dsn)
    process = OperatorProcess(
        kube=kube,
        workdir=workdir,
        ledger_dsn=as_role(ledger_dsn, reader),
        control_dsn=as_role(ledger_dsn, control),
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
