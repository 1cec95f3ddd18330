"""The house rules of the code layout, checked on every run.

Small modules, few of them at the top of each half, no reaching into another
module's private names, and no pointers to documents outside the repository.
The import graph itself (layers, cycles, pure cores) is checked by
``lint-imports`` with the contracts in ``pyproject.toml``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HALVES = ("sidecar", "operator")
MAX_LINES = 450
MAX_TOP_MODULES = 8


def _modules(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = ["aegis", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``import from`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = _dotted(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@pytest.mark.parametrize("top", HALVES)
def test_modules_stay_small(top: str) -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules(top)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("top", HALVES)
def test_few_modules_at_the_top(top: str) -> None:
    direct = sorted(p.name for p in (ROOT / top).glob("*.py"))
    assert len(direct) <= MAX_TOP_MODULES, f"{top}/ has {len(direct)} modules: {direct}"


@pytest.mark.parametrize("top", HALVES)
def test_no_module_imports_another_modules_private_names(top: str) -> None:
    offences = []
    for path in _modules(top):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _resolve(path, node)
            if source == _dotted(path):
                continue
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not name.startswith("__"):
                    offences.append(f"{path.relative_to(ROOT)}: {name} from {source}")
    assert not offences, "private names imported across modules:\n" + "\n".join(offences)


def test_no_pointers_outside_the_repository() -> None:
    pattern = re.compile(r"DESIGN\.md|[Ii]ssue #?[0-9]")
    hits = [
        f"{path.relative_to(ROOT)}:{number}"
        for top in (*HALVES, "tests")
        for path in sorted((ROOT / top).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, f"references to documents outside the repo or issue numbers: {hits}"
