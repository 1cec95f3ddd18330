"""Fixtures for the operator tests: CRDs, the ledger, and one operator process.

``crds`` and ``aegis_operator`` are package-scoped: the operator starts once for all
kube tests here (a restart test stops and starts that same process) and is stopped,
and the CRDs removed, when the package is done.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.controlplane.kube import Kube
from tests.controlplane.postgres import PostgresServer
from tests.operator.harness import OperatorProcess, delete_aegis_objects
from tests.operator.lifecycle import (
    installed_crds,
    migrated_ledger,
    operator_process,
    running,
)


@pytest.fixture(scope="package")
def crds(kube: Kube) -> Iterator[None]:
    yield from installed_crds(kube)


@pytest.fixture(scope="package")
def operator_ledger(postgres: PostgresServer) -> Iterator[str]:
    """The Postgres ledger the operator reads (migrated; tests insert rows)."""
    yield from migrated_ledger(postgres)


@pytest.fixture(scope="package")
def aegis_operator(
    kube: Kube,
    crds: None,
    operator_ledger: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    yield from operator_process(kube, tmp_path_factory.mktemp("operator"), operator_ledger)


@pytest.fixture
def operator(aegis_operator: OperatorProcess) -> OperatorProcess:
    """The running operator; started again first if an earlier test left it stopped."""
    return running(aegis_operator)


@pytest.fixture
def ns(kube: Kube, namespace: str, operator: OperatorProcess) -> Iterator[str]:
    """A fresh namespace whose Aegis objects are deleted afterwards, through the operator
    (its finalizer); the namespace itself never finishes terminating on this API server."""
    yield namespace
    if not operator.running:
        operator.start()
    delete_aegis_objects(kube, namespace)
