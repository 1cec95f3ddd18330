"""Fixtures for the rollout tests: CRDs, a migrated Postgres ledger, one operator
process for the package (short rollout tick), and per test a :class:`RolloutBed`
with its own fleet of sidecar and fake-upstream processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.controlplane.kube import Kube
from tests.controlplane.pgbouncer import PgBouncerServer
from tests.controlplane.postgres import PostgresServer
from tests.operator.harness import OperatorProcess, delete_aegis_objects
from tests.operator.lifecycle import (
    installed_crds,
    migrated_ledger,
    operator_process,
    running,
)
from tests.rollout.bed import RolloutBed, admin_client
from tests.sidecar.fleet import Fleet
from tests.sidecar.tenancy import tenant_url

#: Seconds between rollout controller passes: steps last their interval (seconds in
#: these tests) plus at most this.
ROLLOUT_TICK = 0.3


@pytest.fixture(scope="package")
def crds(kube: Kube) -> Iterator[None]:
    yield from installed_crds(kube)


@pytest.fixture(scope="package")
def rollout_ledger(postgres: PostgresServer) -> Iterator[str]:
    """The shared ledger of the operator and the sidecars."""
    yield from migrated_ledger(postgres)


@pytest.fixture(scope="package")
def rollout_operator(
    kube: Kube, crds: None, rollout_ledger: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    yield from operator_process(
        kube,
        tmp_path_factory.mktemp("rollout-operator"),
        rollout_ledger,
        budget_interval=30.0,
        resync_interval=30.0,
        rollout_tick=ROLLOUT_TICK,
    )


@pytest.fixture
def operator(rollout_operator: OperatorProcess) -> OperatorProcess:
    """The running operator; started again first if an earlier test left it stopped."""
    return running(rollout_operator)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The share suite runs with the sidecars' ledger both direct and through PgBouncer."""
    if metafunc.module.__name__.endswith(".test_share") and "bed" in metafunc.fixturenames:
        metafunc.parametrize("sidecar_ledger_path", ["direct", "pgbouncer"], indirect=True)


@pytest.fixture
def sidecar_ledger_path(request: pytest.FixtureRequest) -> PgBouncerServer | None:
    """The pooler between the sidecars and their ledger (``None``: direct)."""
    if getattr(request, "param", "direct") == "pgbouncer":
        pooler: PgBouncerServer = request.getfixturevalue("pgbouncer")
        return pooler
    return None


@pytest.fixture
async def bed(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    rollout_ledger: str,
    tmp_path: Path,
    *,
    sidecar_ledger_path: PgBouncerServer | None,
) -> AsyncIterator[RolloutBed]:
    api = admin_client(kube.kubeconfig)
    try:
        async with Fleet(tmp_path) as fleet:
            bed = RolloutBed(api, fleet, namespace, rollout_ledger, tmp_path)
            if sidecar_ledger_path is not None:
                tenant = await tenant_url(rollout_ledger, namespace)
                bed.tenant_dsn = sidecar_ledger_path.via(tenant)
            try:
                yield bed
            finally:
                await bed.close()
    finally:
        await api.close()
        if not operator.running:
            operator.start()
        delete_aegis_objects(kube, namespace)
