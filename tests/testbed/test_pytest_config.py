"""pytest's own configuration (pyproject.toml), checked on a scratch test run by it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

UNAWAITED = """
async def check() -> bool:
    return False


async def test_poll_on_a_coroutine() -> None:
    done = lambda: check() and True  # noqa: E731 - the mistake: a coroutine is always true
    assert done()


def test_coroutine_dropped() -> None:
    pending = check()
    del pending


async def test_awaited() -> None:
    assert not await check()
"""


def test_a_coroutine_never_awaited_fails_its_test(tmp_path: Path) -> None:
    (tmp_path / "test_scratch.py").write_text(UNAWAITED)
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
            "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q", "test_scratch.py",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 failed, 1 passed" in done.stdout, done.stdout
    assert "FAILED test_scratch.py::test_poll_on_a_coroutine" in done.stdout
    assert "FAILED test_scratch.py::test_coroutine_dropped" in done.stdout
