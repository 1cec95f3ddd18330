"""What can be checked of the image without a Docker engine."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return [
        line.split(None, 1)[1]
        for line in DOCKERFILE.splitlines()
        if line.strip().upper().startswith(name + " ")
    ]


def test_base_image_is_pinned_to_a_patch_release() -> None:
    (default,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", default)
    assert all(stage.startswith("${PYTHON_IMAGE}") for stage in instructions("FROM"))


def test_multi_stage_and_non_root() -> None:
    stages = instructions("FROM")
    assert len(stages) == 2 and stages[0].endswith("AS build")
    (user,) = instructions("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it


def test_entrypoint_is_the_console_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (entrypoint,) = instructions("ENTRYPOINT")
    assert json.loads(entrypoint) == ["aegis"]
    assert "aegis" in project["project"]["scripts"]


def test_only_runtime_dependencies_are_installed() -> None:
    installs = [line for line in instructions("RUN") if "pip " in line]
    assert installs and all("[test]" not in line and ".[" not in line for line in installs)


def test_the_image_installs_the_fast_extra() -> None:
    """uvloop: the sidecar runs on its event loop when it is installed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(d.startswith("uvloop") for d in project["project"]["optional-dependencies"]["fast"])
    (export,) = re.findall(r"uv export [^\n]*", DOCKERFILE)
    assert " --extra fast " in export


def test_the_image_installs_the_tracing_extra() -> None:
    """OpenTelemetry: the OTEL_* variables the chart sets must find the SDK installed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tracing = project["project"]["optional-dependencies"]["tracing"]
    assert {d.split(">")[0] for d in tracing} == {
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
    }
    (export,) = re.findall(r"uv export [^\n]*", DOCKERFILE)
    assert " --extra tracing " in export


def test_dockerignore_keeps_tests_and_local_state_out() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("**") + 1 :][:4] == [
        "!pyproject.toml",
        "!README.md",
        "!operator/",
        "!sidecar/",
    ]
    copied = [c.split()[0] for c in instructions("COPY") if not c.startswith("--from")]
    assert set(copied) <= {"pyproject.toml", "operator", "sidecar"}
