"""The repository layout keeps `operator` the standard library's and packages every folder.

operator/ and sidecar/ are namespace folders mapped to aegis.operator/aegis.sidecar
by setuptools; an operator/__init__.py would shadow the stdlib `operator` module
for anything run from the repository root, and a code folder missing from
pyproject's package list would be silently left out of the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_import_operator_from_repo_root_is_stdlib() -> None:
    location = Path(run_python("import operator; print(operator.__file__)"))
    assert location.parent == Path(sysconfig.get_paths()["stdlib"])
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_aegis_packages_import() -> None:
    out = run_python(
        "import aegis.operator, aegis.sidecar; "
        "print(list(aegis.operator.__path__)[0]); print(list(aegis.sidecar.__path__)[0])"
    )
    assert out.splitlines() == [str(ROOT / "operator"), str(ROOT / "sidecar")]


def test_aegis_console_script_help() -> None:
    script = shutil.which("aegis", path=str(Path(sys.executable).parent))
    assert script, "the `aegis` console script is not installed in this environment"
    done = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    assert "usage: aegis" in done.stdout


def _code_folders(top: str) -> set[str]:
    base = ROOT / top
    folders = {path.parent for path in base.rglob("*.py") if "__pycache__" not in path.parts}
    return {".".join(("aegis", top, *folder.relative_to(base).parts)) for folder in folders}


def test_every_code_folder_is_a_listed_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert config["package-dir"] == {"aegis.operator": "operator", "aegis.sidecar": "sidecar"}
    for top in ("operator", "sidecar"):
        missing = _code_folders(top) - listed
        assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
