"""Fixtures for the rollout tests: CRDs, a migrated Postgres ledger, one operator
process for the package (short rollout tick), and per test a :class:`RolloutBed`
with its own fleet of sidecar and fake-upstream processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aegis.sidecar.ledger.migrate import migrate
from tests.controlplane.kube import Kube
from tests.controlplane.postgres import PostgresServer
from tests.operator.harness import (
    OperatorProcess,
    delete_aegis_objects,
    install_crds,
    remove_crds,
)
from tests.rollout.bed import RolloutBed, admin_client
from tests.sidecar.fleet import Fleet

#: Seconds between rollout controller passes: steps last their interval (seconds in
#: these tests) plus at most this.
ROLLOUT_TICK = 0.3


@pytest.fixture(scope="package")
def crds(kube: Kube) -> Iterator[None]:
    install_crds(kube)
    yield
    remove_crds(kube)


@pytest.fixture(scope="package")
def rollout_ledger(postgres: PostgresServer) -> Iterator[str]:
    """The shared ledger of the operator and the sidecars (migrated first, as the
    chart's migration job does)."""
    url = postgres.create_database()
    migrate(url)
    yield url
    postgres.start()
    postgres.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="package")
def rollout_operator(
    kube: Kube, crds: None, rollout_ledger: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    platform = kube.create_namespace("aegis-system")
    process = OperatorProcess(
        kube=kube,
        workdir=tmp_path_factory.mktemp("rollout-operator"),
        ledger_dsn=rollout_ledger,
        platform_namespace=platform,
        budget_interval=30.0,
        resync_interval=30.0,
        rollout_tick=ROLLOUT_TICK,
    )
    process.start()
    yield process
    process.stop()
    kube.delete_namespace(platform)


@pytest.fixture
def operator(rollout_operator: OperatorProcess) -> OperatorProcess:
    """The running operator; started again first if an earlier test left it stopped."""
    if not rollout_operator.running:
        rollout_operator.start()
    return rollout_operator


@pytest.fixture
async def bed(
    kube: Kube, namespace: str, operator: OperatorProcess, rollout_ledger: str, tmp_path: Path
) -> AsyncIterator[RolloutBed]:
    api = admin_client(kube.kubeconfig)
    try:
        async with Fleet(tmp_path) as fleet:
            bed = RolloutBed(api, fleet, namespace, rollout_ledger, tmp_path)
            try:
                yield bed
            finally:
                await bed.close()
    finally:
        await api.close()
        if not operator.running:
            operator.start()
        delete_aegis_objects(kube, namespace)
