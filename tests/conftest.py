"""Session-wide fixtures for real infrastructure: PostgreSQL and a Kubernetes API.

Fixtures
--------
``postgres`` (session)  -> :class:`PostgresServer`: ``.dsn``, ``.port``, ``.bin_dir``,
    ``.url(db)``, ``.stop()`` / ``.start()`` (same port and data: outage tests),
    ``.psql(sql)``, ``.log_tail()``.
``pg_url`` (function)   -> ``str``: libpq URL of a fresh empty database, dropped after
    the test; ``sqlalchemy_url(pg_url)`` gives the ``postgresql+asyncpg://`` form.
    Parametrized indirectly with ``"pgbouncer"`` it is that database through
    ``pgbouncer`` (a module list in ``tests/sidecar/conftest.py`` does that).
``pgbouncer`` (session) -> :class:`PgBouncerServer` in transaction mode in front of
    ``postgres``: ``.via(url)``, ``.show("POOLS")``, ``.server_connections()``.
``kube`` (session)      -> :class:`Kube`: ``.kubeconfig``, ``.server``, ``.version``,
    ``.kubectl(...)``, ``.kubectl_json(...)``, ``.apply(...)``, ``.helm(...)``,
    ``.ca`` / ``.ca_cert_pem`` / ``.ca_bundle`` / ``.ca_cert_path`` / ``.ca_key_path``
    (sign webhook certs), ``.webhook_host``, ``.request(...)`` (raw HTTP with a token).
``namespace`` (function) -> ``str``: a fresh namespace in ``kube``, deletion requested
    after the test (never awaited: the local API server has no namespace controller).

When ``AEGIS_TEST_KUBECONFIG`` is set, ``kube`` uses that cluster instead of starting
etcd + kube-apiserver. A fixture that cannot start fails the test under ``CI=true``
and skips it otherwise, always with the reason and the server's log tail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.controlplane import build, versions
from tests.controlplane.apiserver import ControlPlane, ControlPlaneError
from tests.controlplane.kube import Kube, for_control_plane, for_existing_cluster
from tests.controlplane.pgbouncer import PgBouncerError, PgBouncerServer
from tests.controlplane.postgres import PostgresError, PostgresServer, find_bin_dir

_BUILD_ERROR = pytest.StashKey[str]()
_EXTERNAL_ENV = "AEGIS_TEST_KUBECONFIG"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(what: str, reason: str) -> NoReturn:
    """CI must not pass by skipping the real-infrastructure tests, so there it fails."""
    message = f"{what} unavailable: {reason}"
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _uses_kube(item: pytest.Item) -> bool:
    return "kube" in getattr(item, "fixturenames", ())


#: A test using one of these fixtures (directly or through another) needs that server.
_SERVER_FIXTURES = {"postgres": "postgres", "pg_url": "postgres", "kube": "kube"}


def _mark_tiers(items: list[pytest.Item]) -> None:
    """Mark each test with the real servers it uses, so that ``-m "not postgres and not
    kube and not slow"`` selects the fast tier (``make test-fast``) without a list."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker in sorted({m for f, m in _SERVER_FIXTURES.items() if f in used}):
            item.add_marker(marker)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tiers (before ``-m`` deselects by them)."""
    _mark_tiers(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the control-plane binaries before the first kube test, outside any test
    timeout.

    Only when a selected test (after ``-m``) needs `kube` and no existing cluster is
    configured; a no-op taking a fraction of a second when the cache is current.
    """
    config = session.config
    if os.environ.get(_EXTERNAL_ENV) or config.option.collectonly:
        return
    if not any(_uses_kube(item) for item in session.items):
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled():
            build.ensure()
    except build.BuildError as error:
        config.stash[_BUILD_ERROR] = str(error)


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as error:
        return f"unavailable ({error})"
    return ((done.stdout + done.stderr).strip().splitlines() or ["(no output)"])[0]


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The versions of the real servers this run uses."""
    lines = [f"testbin: {versions.testbin_dir()}"]
    external = os.environ.get(_EXTERNAL_ENV)
    if external:
        lines.append(f"kube: existing cluster from {_EXTERNAL_ENV}={external}")
    for binary, line in build.Testbin(versions.testbin_dir()).version_lines().items():
        lines.append(f"{binary}: {line}")
    try:
        lines.append(f"postgres: {_first_line([str(find_bin_dir() / 'postgres'), '--version'])}")
    except PostgresError as error:
        lines.append(f"postgres: {error}")
    return lines


# -- PostgreSQL -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the whole session."""
    try:
        server = PostgresServer.launch(log_dir=tmp_path_factory.mktemp("postgres"))
    except PostgresError as error:
        _unavailable("postgres", str(error))
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def pgbouncer(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgBouncerServer]:
    """PgBouncer in transaction pooling mode in front of ``postgres``."""
    try:
        server = PgBouncerServer.launch(postgres, log_dir=tmp_path_factory.mktemp("pgbouncer"))
    except PgBouncerError as error:
        _unavailable("pgbouncer", str(error))
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test (libpq URL), directly or through PgBouncer."""
    postgres.start()  # no-op unless an earlier test left it stopped
    url = postgres.create_database()
    if getattr(request, "param", "direct") == "pgbouncer":
        yield request.getfixturevalue("pgbouncer").via(url)
    else:
        yield url
    postgres.start()  # this test may have simulated an outage
    postgres.drop_database(url.rsplit("/", 1)[1])


# -- Kubernetes ---------------------------------------------------------------------------
def _external_kube(kubeconfig: str, workdir: Path) -> Kube:
    kubectl, helm = shutil.which("kubectl"), shutil.which("helm")
    if not kubectl or not helm:  # fall back to the pinned builds (slow only the first time)
        needed = [name for name, found in (("kubernetes", kubectl), ("helm", helm)) if not found]
        testbin = build.ensure(needed)
        kubectl, helm = kubectl or str(testbin.kubectl), helm or str(testbin.helm)
    return for_existing_cluster(Path(kubeconfig), workdir, kubectl, helm)


@pytest.fixture(scope="session")
def kube(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kube]:
    """A real Kubernetes API: local etcd + kube-apiserver, or AEGIS_TEST_KUBECONFIG."""
    workdir = tmp_path_factory.mktemp("kube")
    external = os.environ.get(_EXTERNAL_ENV)
    if external:
        try:
            handle = _external_kube(external, workdir)
        except (OSError, subprocess.SubprocessError, build.BuildError) as error:
            _unavailable("kube (existing cluster)", str(error))
        yield handle
        return
    build_error = request.config.stash.get(_BUILD_ERROR, None)
    if build_error:
        _unavailable("kube (control-plane build)", build_error)
    try:
        testbin = build.ensure()
    except build.BuildError as error:
        _unavailable("kube (control-plane build)", str(error))
    plane = ControlPlane(testbin, workdir)
    try:
        plane.start()
    except ControlPlaneError as error:
        _unavailable("kube", str(error))
    try:
        yield for_control_plane(plane)
    finally:
        plane.stop()


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace; deletion is requested afterwards but not awaited."""
    name = kube.create_namespace()
    yield name
    kube.delete_namespace(name)
