"""The fold table of :mod:`.normalise`: what each foldable code point becomes.

The table is a function of the Unicode database alone, but computing it looks at
every code point of four planes, ~200k ``unicodedata`` calls: about a tenth of a
second of every sidecar's start and ~2 MB of heap it never gives back. So it
ships precomputed in ``folds.json``, stamped with the Unicode version it was
computed under; an interpreter with another version computes its own, so the
table always matches the ``unicodedata`` the rest of detection reads.
``python -m tests.sidecar.folds_sync`` rewrites it; a test compares the two.
"""

from __future__ import annotations

import json
import unicodedata
from importlib import resources
from pathlib import Path

# Full stops that NFKC leaves alone but readers take for a dot.
_DOTS = {0x3002: ".", 0x00B7: ".", 0x2022: ".", 0x2219: ".", 0x30FB: "."}
# Planes with foldable code points: the BMP and SMP (fullwidth forms, mathematical
# alphanumerics), the CJK compatibility ideographs of plane 2 and the tags of plane 14.
_PLANES = ((0x80, 0x20000), (0x2F800, 0x2FA20), (0xE0000, 0xE1000))
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn"})
SHIPPED = "folds.json"


def fold_of(char: str) -> str | None:
    """What one non-ASCII code point folds to, or None when it stays as it is."""
    code = ord(char)
    if code in _DOTS:
        return _DOTS[code]
    category = unicodedata.category(char)
    if category in _DROPPED_CATEGORIES:
        return ""
    if category == "Zs":
        return " "
    if category == "Pd":
        return "-"
    if category == "Nd":
        return str(unicodedata.decimal(char))
    folded = unicodedata.normalize("NFKC", char)
    return folded if folded != char else None


def computed() -> dict[int, str]:
    """The table, from this interpreter's Unicode database."""
    table: dict[int, str] = {}
    for low, high in _PLANES:
        for code in range(low, high):
            folded = fold_of(chr(code))
            if folded is not None:
                table[code] = folded
    return table


def shipped() -> tuple[str, dict[int, str]] | None:
    """(Unicode version, table) of ``folds.json``, or None without one."""
    try:
        raw = resources.files(__package__).joinpath(SHIPPED).read_bytes()
    except FileNotFoundError:
        return None
    document = json.loads(raw)
    return document["unicode"], {code: folded for code, folded in document["folds"]}


def fold_table() -> dict[int, str]:
    """The shipped table when it was computed under this interpreter's Unicode
    version, else the table computed here."""
    found = shipped()
    if found is not None and found[0] == unicodedata.unidata_version:
        return found[1]
    return computed()


def write(path: Path) -> None:
    """``folds.json`` as computed here."""
    document = {
        "unicode": unicodedata.unidata_version,
        "folds": [[code, folded] for code, folded in sorted(computed().items())],
    }
    path.write_text(json.dumps(document, ensure_ascii=True, separators=(",", ":")) + "\n")
