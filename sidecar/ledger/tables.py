"""Plain-text tables for a terminal, as ``aegis ledger report`` prints them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal


def text_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: set[int]) -> list[str]:
    """Aligned lines: the header, a rule, one line per row; columns in ``right``
    (by index) are right-aligned, the rest left-aligned."""
    body = [list(r) for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)]


def percent(ratio: Decimal | None) -> str:
    """A utilisation ratio as people read it (``42.5%``); ``n/a`` for a zero limit."""
    return "n/a" if ratio is None else f"{ratio * 100:.1f}%"
