"""The lock file: current with pyproject.toml, and above the security floors."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")


def locked() -> dict[str, Version]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: Version(p["version"]) for p in lock["package"] if "version" in p}


def test_lock_is_current_with_pyproject() -> None:
    done = subprocess.run(
        [str(UV), "lock", "--check", "--offline"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_runtime_dependency_is_locked_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    versions = locked()
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in versions, f"{name} is not in uv.lock"
        assert requirement.specifier.contains(versions[name]), (text, versions[name])
    # The floors that keep known fixes in: aiohttp's request smuggling ones.
    assert versions["aiohttp"] >= Version("3.12.14")
