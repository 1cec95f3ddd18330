"""The one-node cluster for the tests marked ``node``: one cluster per session.

``cluster`` (session) -> :class:`NodeCluster`: ``.kube`` (the usual :class:`Kube`
handle: kubectl, helm, namespaces), ``.images`` (the Aegis, pause, CoreDNS, PostgreSQL
and client images, imported), ``.layout``.
``traces`` (session) -> :class:`Traces`: an OpenTelemetry Collector (the test bed's
binary, :mod:`tests.controlplane.otelcol`) on the host, its OTLP/HTTP receiver on the
host's address on the cluster's link (pods reach it through the node), forwarding to a
receiver in this process that keeps the spans.
``release`` (session) -> :class:`tests.node.release.Release`: the one ``helm install``
of ``helm/aegis`` the end-to-end tests share, with tracing on and pointed at ``traces``
(uninstalled at the end unless a test did it, or ``AEGIS_E2E_KEEP`` is set: with
``AEGIS_CLUSTER_KEEP`` too, everything stays for a look with kubectl). A healthy
cluster that is already running (``make cluster``) is reused and left running;
otherwise the session starts one and removes it at the end, then checks that nothing of
it is left on the machine.

Binaries and images are built before the first test (outside any test timeout) when a
selected test is marked ``node``. When the cluster cannot be built or started the tests
fail under ``CI=true`` and are skipped otherwise, with the reason.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn

import pytest

from tests.cluster import image_build as image_builder
from tests.cluster.cluster import Cluster
from tests.cluster.images import Images
from tests.cluster.layout import Layout
from tests.cluster.shell import ClusterError
from tests.controlplane import build
from tests.controlplane.kube import CommandError, Kube, for_existing_cluster
from tests.controlplane.otelcol import Collector, CollectorError, Sink, ensure_collector
from tests.controlplane.procs import wait_until
from tests.controlplane.tools import API_TOOLS, NODE_TOOLS
from tests.node import release as chart
from tests.node.product import APP, NS, Shop, app, setup_namespace

_PREPARED = pytest.StashKey[tuple[build.Testbin, Images]]()
_PREPARE_ERROR = pytest.StashKey[str]()
Say = Callable[[str], None]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(what: str, reason: str) -> NoReturn:
    """CI must not pass by skipping the node tests, so there it fails."""
    message = f"{what} unavailable: {reason}"
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "node: needs the one-node cluster (tests/cluster)")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the node binaries and the images before the first test that uses the
    cluster (only when one is selected after ``-m``)."""
    config = session.config
    wanted = any("cluster" in getattr(i, "fixturenames", ()) for i in session.items)
    if config.option.collectonly or not wanted:
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        try:
            if os.geteuid() != 0:
                raise ClusterError("the one-node cluster needs root")
            testbin = build.ensure(API_TOOLS + NODE_TOOLS)
            images = image_builder.ensure(testbin, lambda line: print(f"[images] {line}"))
            ensure_collector()
        except (build.BuildError, ClusterError, CollectorError, OSError) as error:
            config.stash[_PREPARE_ERROR] = str(error)
            return
    config.stash[_PREPARED] = (testbin, images)


@dataclass(frozen=True)
class NodeCluster:
    kube: Kube
    images: Images
    layout: Layout
    cluster: Cluster


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeCluster]:
    config = request.config
    error = config.stash.get(_PREPARE_ERROR, None)
    if error:
        _unavailable("cluster (build)", error)
    prepared = config.stash.get(_PREPARED, None)
    if prepared is None:
        _unavailable("cluster", "not prepared before the session's first test")
    testbin, images = prepared
    layout = Layout.from_env()
    capture = config.pluginmanager.getplugin("capturemanager")

    def log(line: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"[cluster] {line}", flush=True)

    handle = Cluster(layout, testbin, log)
    previous_owner = handle.owner()
    try:
        reused = handle.up(images, owner=f"pytest {os.getpid()}")
    except ClusterError as failure:
        _unavailable("cluster", str(failure))
    # A cluster left by an interrupted test session is adopted (and removed at the end);
    # one from `make cluster` is someone's: it stays.
    adopted = reused and previous_owner.startswith("pytest")
    if reused:
        log(f"reusing the running cluster (started by {previous_owner or 'unknown'})")
    else:
        log(f"started; kubeconfig {layout.kubeconfig}")
    try:
        kube = for_existing_cluster(
            layout.kubeconfig,
            tmp_path_factory.mktemp("node-kube"),
            str(testbin.kubectl),
            str(testbin.helm),
        )
        yield NodeCluster(kube, images, layout, handle)
    finally:
        if (adopted or not reused) and not os.environ.get("AEGIS_CLUSTER_KEEP"):
            left = handle.down()
            assert not left, f"the cluster left things behind: {left}"


@dataclass(frozen=True)
class Traces:
    """What the cluster's sidecars and operator export: ``endpoint`` (the collector's
    OTLP/HTTP base URL, as pods reach it) and ``sink`` (the spans it forwarded)."""

    endpoint: str
    sink: Sink
    collector: Collector


@pytest.fixture(scope="session")
def traces(cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traces]:
    sink = Sink()
    collector = Collector(
        ensure_collector(log=False),
        tmp_path_factory.mktemp("otelcol"),
        forward_to=sink.url,
        host=cluster.layout.host_ip,
    )
    try:
        collector.start()
    except CollectorError as error:
        sink.close()
        _unavailable("OpenTelemetry Collector", str(error))
    try:
        yield Traces(collector.endpoint, sink, collector)
    finally:
        collector.stop()
        sink.close()


@pytest.fixture(scope="session")
def release(
    cluster: NodeCluster,
    traces: Traces,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[chart.Release]:
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def log(text: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n[helm] {text}", flush=True)

    installed = chart.install(
        cluster.kube,
        cluster.images,
        cluster.layout,
        tmp_path_factory.mktemp("chart"),
        log,
        tracing_endpoint=traces.endpoint,
    )
    yield installed
    if not os.environ.get("AEGIS_E2E_KEEP"):  # keep it to look around afterwards
        chart.uninstall(installed)


@pytest.fixture
def say(request: pytest.FixtureRequest) -> Say:
    """Print to the test log live, whatever the capture mode (evidence for the CI log)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def _say(text: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n[{request.node.name}] {text}", flush=True)

    return _say


@pytest.fixture
def ns(cluster: NodeCluster) -> Iterator[str]:
    """A fresh namespace; the cluster's namespace controller removes it afterwards."""
    name = f"node-{uuid.uuid4().hex[:8]}"
    cluster.kube.kubectl("create", "namespace", name)
    yield name
    cluster.kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="package")
def shop(
    cluster: NodeCluster, release: chart.Release, request: pytest.FixtureRequest
) -> Iterator[Shop]:
    """The shop's namespace, route, budgets and fakes; then the app, once its ledger
    Secret (the operator's, holding the namespace's own database role) exists. One
    for the package: the scenarios of ``test_product.py`` and then the faults of
    ``test_product_faults.py`` run against it, in file order."""
    started = time.monotonic()
    shop = Shop(cluster.kube, cluster.images.client.short, cluster.images.aegis.short)
    setup_namespace(shop)

    def tenant_secret() -> bool:
        found = shop.kubectl("get", "secret", "aegis-ledger", "--ignore-not-found", "-o", "name")
        return bool(found.strip())

    try:
        wait_until(tenant_secret, timeout=120, what="the operator's ledger Secret", interval=1)
    except TimeoutError:
        logs = release.kubectl("logs", "deployment/aegis-operator", "--tail=60", check=False)
        raise AssertionError(f"no ledger Secret in {NS}; operator log:\n{logs}") from None
    cluster.kube.apply(app(shop.client_image), NS)
    try:
        shop.kubectl("rollout", "status", f"deployment/{APP}", "--timeout=180s", timeout=200)
    except CommandError as error:
        pods = shop.kubectl("describe", "pods", "-l", f"app={APP}", check=False)
        logs = shop.kubectl(
            "logs", "-l", f"app={APP}", "-c", "aegis-sidecar", "--tail=40", check=False
        )
        raise AssertionError(f"{error}\n{pods[-3000:]}\nsidecar log:\n{logs}") from None
    shop.wait_sidecar_config()
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[shop] fakes, route, budgets, injected app: {time.monotonic() - started:.0f}s")
    yield shop
    if not os.environ.get("AEGIS_E2E_KEEP"):
        cluster.kube.kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="package")
def answered() -> list[str]:
    """Request ids of every answer the app got (X-Aegis-Request-Id): all must reach the
    ledger."""
    return []


@pytest.fixture
def timed(say: Say) -> Iterator[None]:
    """Each scenario's cost, in the log (the product tests use it on every test)."""
    started = time.monotonic()
    yield
    say(f"scenario took {time.monotonic() - started:.1f}s")
