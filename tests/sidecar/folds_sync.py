"""Rewrites ``sidecar/request/folds.json`` from this interpreter's Unicode database
(``test_normalise`` fails, naming this command, when the shipped table differs).

    python -m tests.sidecar.folds_sync
"""

from __future__ import annotations

from pathlib import Path

from aegis.sidecar.request import folds

SHIPPED = Path(folds.__file__).with_name(folds.SHIPPED)
COMMAND = "python -m tests.sidecar.folds_sync"

if __name__ == "__main__":
    folds.write(SHIPPED)
    print(f"wrote {SHIPPED}")
