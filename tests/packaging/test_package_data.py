"""Every file the packages read at run time is in the wheel: each non-Python file
under ``sidecar/`` and ``operator/`` is matched by a ``package-data`` pattern of its
package, or listed here as not read at run time."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = {
    # The operator's documented minimal rules: the chart carries a copy, nothing reads it.
    "operator/rbac.yaml",
}


def _unshipped() -> list[str]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dirs: dict[str, str] = setuptools["package-dir"]
    patterns: dict[str, list[str]] = setuptools["package-data"]
    missing = []
    for package, folder in package_dirs.items():
        base = ROOT / folder
        shipped = {path for glob in patterns.get(package, []) for path in base.glob(glob)}
        for path in sorted(base.rglob("*")):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(ROOT).as_posix()
            if path not in shipped and relative not in NOT_SHIPPED:
                missing.append(relative)
    return missing


def test_every_data_file_of_the_packages_is_shipped() -> None:
    assert _unshipped() == [], "add these to [tool.setuptools.package-data] in pyproject.toml"
