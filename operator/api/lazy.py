"""Package attributes that load their module on first use (PEP 562).

A package whose face names heavy modules lists them in a table, name -> module,
and sets ``__getattr__ = on_first_use(__name__, table)``: importing the package
stays cheap, and ``package.Name`` imports the module the first time it is read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def on_first_use(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``table[name]`` on demand."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{module}", package), name)

    return __getattr__
