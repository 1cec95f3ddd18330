"""``@valueclass`` records: frozen to the type checker, plain slotted dataclasses at run
time (their ``__init__`` skips ``object.__setattr__``), hashable and equal by value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aegis.sidecar.adapters import Usage
from tests.sidecar.ledger_helpers import record

SIDECAR = Path(__file__).resolve().parents[2] / "sidecar"


def test_records_compare_and_hash_by_value() -> None:
    assert record(1) == record(1) and hash(record(1)) == hash(record(1))
    assert record(1, tokens_in=1) != record(1)
    assert len({Usage(1, 2), Usage(1, 2), Usage(2, 1)}) == 2
    assert not hasattr(record(1), "__dict__")  # slotted


def test_the_type_checker_refuses_an_assignment_to_a_field(tmp_path: Path) -> None:
    (tmp_path / "aegis").mkdir()
    (tmp_path / "aegis" / "sidecar").symlink_to(SIDECAR)
    snippet = tmp_path / "assigns.py"
    snippet.write_text(
        "from aegis.sidecar.adapters import Usage\nusage = Usage(1, 2)\nusage.prompt_tokens = 3\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        capture_output=True,
        check=False,  # the failure is the point
        text=True,
        cwd=tmp_path,
        env={"MYPYPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert 'assigns.py:3: error: Property "prompt_tokens" defined in "Usage" is read-only' in (
        checked.stdout
    )
