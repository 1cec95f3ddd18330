"""Fixtures for the chart tests: the pinned helm (no cluster needed) and promtool."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import NoReturn

import pytest

from tests.helm import sync
from tests.helm.chart import Helm


def _unavailable(what: str, reason: str) -> NoReturn:
    """As tests/conftest.py: CI must not pass by skipping, so there it fails."""
    message = f"{what} unavailable: {reason}"
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        binary = sync.helm_binary()
    except Exception as error:  # the builder raises BuildError; any failure means no helm
        _unavailable("helm", str(error))
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def promtool() -> Iterator[str]:
    """Debian's promtool (package prometheus; `make promtool` installs it)."""
    found = shutil.which("promtool")
    if not found:
        _unavailable("promtool", "not on PATH (apt-get install prometheus)")
    yield found
