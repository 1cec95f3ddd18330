"""Text as PII detection reads it: look-alike characters folded, invisible ones gone.

An attacker (or a careless copy and paste) writes an address in fullwidth letters
(U+FF41...) with U+FF20 for the "@", puts a zero-width space inside a card number
or uses Arabic-Indic digits; the provider's model reads all of them as the plain
value. Folding, per code point:

- format characters (Unicode ``Cf``: zero-width space and joiners, soft hyphen, BOM,
  bidi controls, tag characters) and combining marks (``Mn``) are removed;
- space separators (``Zs``) become a space, dashes (``Pd``) a hyphen-minus, decimal
  digits of any script (``Nd``) the ASCII digit, and a few full stops ``.``;
- everything else takes its NFKC form (fullwidth letters and signs, mathematical and
  circled digits, ligatures, superscripts).

NFKC is applied per code point rather than to the whole string: canonical
composition across code points changes nothing detection looks at, and per code
point every output character comes from exactly one input character, so a finding
in the folded text maps back to the exact original characters (:func:`origins`),
which masking must replace.

Cost: ASCII text (the common case) is returned as it is; in other text the
foldable characters are found by one RE2 pass (a DFA: speed independent of the
size of the class, unlike ``re``), and the text is rebuilt around the few there
are, or translated whole when there are many.
"""

from __future__ import annotations

from itertools import accumulate

import re2

from .folds import fold_table


def _build() -> tuple[dict[int, str], re2._Regexp]:
    table = fold_table()
    ranges: list[list[int]] = []
    for code in sorted(table):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    members = "".join(
        f"\\x{{{low:x}}}" if low == high else f"\\x{{{low:x}}}-\\x{{{high:x}}}"
        for low, high in ranges
    )
    options = re2.Options()
    options.log_errors = False
    return table, re2.compile(f"[{members}]", options)


FOLD, _FOLDABLE = _build()
_SPARSE = 64  # pieces (two per foldable character) before translating the whole text


def normalise(text: str) -> str:
    """``text`` with look-alikes folded and invisible characters removed."""
    if text.isascii():
        return text
    # Few foldable characters (accents and CJK punctuation in ordinary text): copy the
    # runs between them; many (a fullwidth or zero-width-laced text): translate all.
    parts: list[str] = []
    last = 0
    for m in _FOLDABLE.finditer(text):
        if len(parts) > _SPARSE:
            return text.translate(FOLD)
        start = m.start()
        parts.append(text[last:start])
        parts.append(FOLD[ord(text[start])])
        last = start + 1
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


def origins(text: str) -> list[int]:
    """For each position of ``normalise(text)`` (and its end), the position in
    ``text`` of the character it came from: a span ``[s, e)`` of the folded text is
    ``[origins[s], origins[e])`` of the original, removed characters included
    when they sit inside the span."""
    if text.isascii() or _FOLDABLE.search(text) is None:
        return list(range(len(text) + 1))
    lengths = [len(FOLD.get(ord(c), c)) for c in text]
    starts = list(accumulate(lengths, initial=0))
    out: list[int] = []
    for i, n in enumerate(lengths):
        out.extend([i] * n)
    # Characters removed at the very end belong to the last kept one's span.
    out.append(len(text) if not out else _end_of(starts, len(text)))
    return out


def _end_of(starts: list[int], length: int) -> int:
    """The original position right after the last character that produced output."""
    total = starts[-1]
    i = length
    while i > 0 and starts[i - 1] == total:
        i -= 1
    return i
