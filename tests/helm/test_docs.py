"""The commands of docs/install.md and docs/operations.md, run as written.

Every ``sh`` and ``yaml`` block of those pages carries a marker on the line before it:

- ``<!-- test: walkthrough -->`` (install.md): run in order against the test bed, with
  the namespaces and the release name made unique and helm's hooks skipped (no kubelet
  would run the migration job);
- ``<!-- test: operations -->`` (operations.md): run against the test bed, in a
  namespace holding the examples;
- ``<!-- test: ledger -->``: run here against a migrated Postgres ledger;
- ``<!-- test: offline -->``: run here from the repository root;
- ``<!-- test: values -->``: a values file, rendered with ``helm template``;
- ``<!-- not run: REASON -->``: documented but never run, with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.controlplane.kube import Kube
from tests.controlplane.postgres import PostgresServer
from tests.helm import sync
from tests.helm.chart import Helm
from tests.helm.cluster import AEGIS, adopt_crds

DOCS = [sync.ROOT / "docs" / "install.md", sync.ROOT / "docs" / "operations.md"]
MARKER = re.compile(r"^<!-- (?:test: (?P<test>[a-z]+)|not run: (?P<reason>.+)) -->$")
FENCE = re.compile(r"^```(?P<lang>\w*)$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    marker: str  # the test kind, or "not run"
    text: str


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = lines.index("```", i + 1)
        previous = lines[i - 1] if i else ""
        marker = MARKER.match(previous)
        kind = "" if marker is None else marker["test"] or "not run"
        yield Block(page.name, i + 1, fence["lang"], kind, "\n".join(lines[i + 1 : end]) + "\n")
        i = end + 1


def marked(kind: str) -> list[Block]:
    return [b for page in DOCS for b in blocks(page) if b.marker == kind]


def test_every_command_block_is_tested_or_says_why_not() -> None:
    found = [b for page in DOCS for b in blocks(page) if b.lang in {"sh", "yaml"}]
    assert found
    unmarked = [f"{b.page}:{b.line}" for b in found if not b.marker]
    assert unmarked == [], "add a <!-- test: … --> or <!-- not run: … --> marker"
    assert {b.marker for b in found} <= {
        "walkthrough", "operations", "ledger", "offline", "values", "not run",
    }  # fmt: skip


def test_install_values_examples_render(helm: Helm, tmp_path: Path) -> None:
    examples = marked("values")
    assert len(examples) >= 4
    for number, block in enumerate(examples):
        path = tmp_path / f"values-{number}.yaml"
        path.write_text(block.text)
        # Values that need a foreign CRD render too: helm template needs no cluster.
        helm.run("template", "aegis", str(sync.CHART), "-f", str(path))


def run_block(block: Block, env: dict[str, str], cwd: Path, replace: dict[str, str]) -> str:
    text = block.text
    for pattern, value in replace.items():
        text = re.sub(pattern, value, text)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", text],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{block.page}:{block.line}\n{text}\n{done.stdout}{done.stderr}"
    return done.stdout


def test_offline_commands(promtool: str) -> None:
    for block in marked("offline"):
        run_block(block, dict(os.environ), sync.ROOT, {})


def tool_env(kube: Kube, workdir: Path) -> dict[str, str]:
    """PATH with the test bed's kubectl and helm (not the machine's) and this venv's aegis."""
    bin_dir = workdir / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, target in (("kubectl", kube.kubectl_bin), ("helm", kube.helm_bin)):
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(target)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {**kube.env, "PATH": path}


@pytest.mark.kube
@pytest.mark.slow
def test_install_walkthrough(kube: Kube, tmp_path: Path) -> None:
    """docs/install.md from namespace creation to uninstall, against the real API server."""
    release = f"aegis-doc-{uuid.uuid4().hex[:6]}"
    namespace, app = f"{release}-sys", f"{release}-app"
    replace = {
        r"\baegis-system\b": namespace,
        r"namespace rag\b": f"namespace {app}",
        r",rag\}": f",{app}}}",
        r"-n rag\b": f"-n {app}",
        r"\bhelm (install|upgrade|uninstall) aegis\b": rf"helm \1 {release}",
        r"instance=aegis\b": f"instance={release}",
        r"release-name=aegis\b": f"release-name={release}",
        r"\baegis-injector\b": f"{release}-injector",
        # No kubelet runs the migration job here: skip hooks, as test_install does.
        r"(helm (?:install|upgrade) [^\n]*)": r"\1 --no-hooks",
    }
    crds = ("llmroutes.aegis.io", "llmbudgets.aegis.io", "clusterllmbudgets.aegis.io")
    adopt_crds(kube, release, namespace, crds)
    env = tool_env(kube, tmp_path)
    walkthrough = marked("walkthrough")
    assert len(walkthrough) >= 5
    try:
        outputs = [run_block(block, env, sync.ROOT, replace) for block in walkthrough]
    finally:
        kube.helm("uninstall", release, "-n", namespace, "--ignore-not-found", "--no-hooks")
        kube.delete_namespace(app)
        kube.delete_namespace(namespace)
    assert f"{release}-operator" in outputs[1] and f"{release}-injector" in outputs[1]
    assert "rag-api" in outputs[2]  # kubectl get llmroutes,llmbudgets in the app namespace
    assert "llmroutes.aegis.io" in outputs[-1]  # the CRDs outlive the release
    assert "rag-api" in outputs[-1]  # and so do the routes


@pytest.fixture
def examples_namespace(kube: Kube) -> Iterator[str]:
    namespace = kube.create_namespace("aegis-ops")
    for example in ("secrets.yaml", "budgets.yaml", "rag-api-route.yaml"):
        kube.kubectl("apply", "-n", namespace, "-f", str(sync.ROOT / "crds" / "examples" / example))
    yield namespace
    kube.delete_namespace(namespace)


@pytest.mark.kube
def test_operations_commands(kube: Kube, examples_namespace: str, tmp_path: Path) -> None:
    replace = {r"-n rag\b": f"-n {examples_namespace}"}
    env = tool_env(kube, tmp_path)
    for block in marked("operations"):
        run_block(block, env, sync.ROOT, replace)
    route = kube.kubectl_json("get", "llmroute", "chat-api", "-n", examples_namespace)
    assert route["spec"]["rollout"]["promote"] is True


@pytest.mark.postgres
def test_ledger_commands(postgres: PostgresServer, tmp_path: Path) -> None:
    postgres.start()
    url = postgres.create_database("docs")
    try:
        done = subprocess.run(
            [*AEGIS, "ledger", "migrate", "--url", url],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        env = {**os.environ, "AEGIS_LEDGER_DSN": url}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
        for block in marked("ledger"):
            run_block(block, env, tmp_path, {})
        from aegis.sidecar.ledger.models import COLUMNS

        header = (tmp_path / "ledger.csv").read_text().splitlines()[0]
        assert header.split(",") == list(COLUMNS)
    finally:
        postgres.drop_database(url.rsplit("/", 1)[1])
