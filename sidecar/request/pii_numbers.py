"""The numeric PII detectors: phone, card, IBAN and national ids, with their spans.

The text is scanned by one regex that finds runs of digits joined by separators
("clusters"). Everything else (IBAN, card, phone, national ids) is decided in
Python on the few clusters long enough to matter, so there is no per-kind regex
over the whole prompt and no pattern that can backtrack catastrophically
(possessive quantifiers, fixed separators). Separators may be mixed ("4111-1111
1111.1111"): writing a number with odd separators must not hide it. A finding's
span is the whole cluster (plus the letters of an IBAN or a NINO before it): a
little more than the value itself, which is what masking must cover.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum

from .checksums import (
    IBAN_LENGTHS,
    cn_resident_id_ok,
    de_tax_id_ok,
    iban_ok,
    luhn_ok,
    nl_bsn_ok,
    us_ssn_ok,
)


class PiiKind(StrEnum):
    """The built-in detectors (also the ``detector`` label of the metrics)."""

    EMAIL = "email"
    PHONE = "phone"
    IBAN = "iban"
    CARD = "card"
    US_SSN = "us_ssn"
    UK_NINO = "uk_nino"
    CN_RESIDENT_ID = "cn_resident_id"
    DE_TAX_ID = "de_tax_id"
    NL_BSN = "nl_bsn"


Span = tuple[PiiKind, int, int]

# A "cluster" is a run of at least 6 digits and single separators ("(555) 123" and
# "1 (555)" included). Shorter runs (years, prices, counts) are too short for any
# phone, card or id and never reach Python. Starting with a lone character class
# lets the engine skip other text in C.
_CLUSTER = re.compile(r"[0-9](?=[0-9 \-./()]{5})[0-9]*+(?:(?:[ \-./]|\) ?| ?\()[0-9]++)*+")
# Where an IBAN may start, searched only in the few characters before a cluster
# (every IBAN has a digit run within its first 12 characters: "GB82 WEST 1234 ...").
_IBAN_START = re.compile(r"[A-Z]{2}[0-9]{2}")
_IBAN_LOOKBACK = 12
_NON_DIGITS = re.compile(r"([^0-9]+)")
# Every ASCII digit as "0", anything else as " " (for _first_digit).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
# Context a bare nine-digit number needs to count as an SSN / BSN (searched in the
# few characters before the number only).
_SSN_CONTEXT = re.compile(r"ssn|social security", re.IGNORECASE)
_BSN_CONTEXT = re.compile(r"bsn|burgerservice|sofi", re.IGNORECASE)
_CONTEXT_CHARS = 40

_IBAN_COMPACT = re.compile(r"[A-Z]{2}[0-9]{2}[A-Za-z0-9]{11,30}+")
_IBAN_GROUPED = re.compile(
    r"[A-Z]{2}[0-9]{2}(?:[ \-.][A-Za-z0-9]{4})++(?:[ \-.][A-Za-z0-9]{1,3}(?![A-Za-z0-9]))?"
)
_IBAN_SEPARATORS = str.maketrans("", "", " -.")
_NINO = re.compile(r"([A-Z]{2}) ?(?:[0-9]{6}|[0-9]{2} [0-9]{2} [0-9]{2}) ?[A-D]?(?![A-Za-z0-9_])")
_NINO_FIRST_BAD = frozenset("DFIQUV")
_NINO_SECOND_BAD = frozenset("DFIOQUV")
_NINO_PREFIX_BAD = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
# Separators between the groups of a card, an SSN or a North American phone; any
# mix of them counts.
_GROUP_SEPARATORS = frozenset({" ", "-", "."})
_TRUNK_SEPARATORS = frozenset({" ", "-", "/"})


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _iban_at(text: str, p: int) -> int:
    """End of an IBAN of its country's exact length at p (compact or in groups of
    four), or -1."""
    if p > 0 and _word(text[p - 1]):
        return -1
    length = IBAN_LENGTHS[text[p : p + 2]]
    m = _IBAN_COMPACT.match(text, p) or _IBAN_GROUPED.match(text, p)
    if m is None:
        return -1
    grouped = m.group()
    compact = grouped.translate(_IBAN_SEPARATORS)
    end = m.end()
    if len(compact) != length:
        # Grouped and followed by a four-letter word: the IBAN may end on a group.
        if len(compact) < length or length % 4 or len(compact) == len(grouped):
            return -1
        compact = compact[:length]
        end = p + length + length // 4 - 1
    elif end < len(text) and _word(text[end]):
        return -1
    return end if iban_ok(compact.upper()) else -1


def _iban_span(text: str, s: int, e: int) -> tuple[int, int] | None:
    """The IBAN starting shortly before s that runs through the cluster [s, e)."""
    for start in _IBAN_START.finditer(text, max(0, s - _IBAN_LOOKBACK), s + 2):
        p = start.start()
        if text[p : p + 2] in IBAN_LENGTHS:
            end = _iban_at(text, p)
            if end >= e:
                return p, end
    return None


def _nino_end(text: str, p: int) -> int:
    if p > 0 and _word(text[p - 1]):
        return -1
    m = _NINO.match(text, p)
    if m is None:
        return -1
    prefix = m.group(1)
    if prefix[0] in _NINO_FIRST_BAD or prefix[1] in _NINO_SECOND_BAD:
        return -1
    return -1 if prefix in _NINO_PREFIX_BAD else m.end()


def _context_before(pattern: re.Pattern[str], text: str, s: int) -> bool:
    return pattern.search(text, max(0, s - _CONTEXT_CHARS), s) is not None


class _Runs:
    """The digit groups of one cluster and the separators between them."""

    __slots__ = ("digs", "end_ok", "left_ok", "n", "opened", "seps")

    def __init__(self, text: str, s: int, e: int, parts: list[str]) -> None:
        self.digs = parts[0::2]  # parts: digits, separator, digits, ...
        self.seps = parts[1::2]
        self.n = len(self.digs)
        self.left_ok = s == 0 or not _word(text[s - 1])
        self.end_ok = e == len(text) or not _word(text[e])
        self.opened = s > 0 and text[s - 1] == "("

    def starts(self, i: int) -> bool:
        """Group i can begin a number (not glued to a word, not after a decimal point)."""
        return self.left_ok if i == 0 else self.seps[i - 1] != "."

    def ends(self, j: int) -> bool:
        """Group j can end a number (not glued to a word, not before a decimal point)."""
        return self.end_ok if j == self.n - 1 else self.seps[j] != "."


def _card(r: _Runs, plus: bool) -> bool:
    # 13-19 digits starting 2-6 (the issuer ranges in use), compact or in groups of
    # 3-6 after a first group of 4 (space, dash or dot between them), Luhn.
    for i in range(1 if plus else 0, r.n):
        first = r.digs[i]
        if first[0] not in "23456" or not r.starts(i):
            continue
        if 13 <= len(first) <= 19 and r.ends(i) and luhn_ok(first):
            return True
        if len(first) != 4 or i == r.n - 1:
            continue
        total, parts = 4, [first]
        for j in range(i + 1, r.n):
            g = r.digs[j]
            if r.seps[j - 1] not in _GROUP_SEPARATORS or not 3 <= len(g) <= 6:
                break
            total += len(g)
            parts.append(g)
            if total > 19:
                break
            if total >= 13 and r.ends(j) and luhn_ok("".join(parts)):
                return True
    return False


def _us_ssn(text: str, s: int, r: _Runs) -> bool:
    digs, seps = r.digs, r.seps
    for i in range(r.n - 2):
        if (len(digs[i]), len(digs[i + 1]), len(digs[i + 2])) != (3, 2, 4):
            continue
        if seps[i] not in _GROUP_SEPARATORS or seps[i + 1] not in _GROUP_SEPARATORS:
            continue
        # Part of a longer chain of groups: a phone number or a table row.
        if (i > 0 and seps[i - 1] in _GROUP_SEPARATORS) or (
            i + 3 < r.n and seps[i + 2] in _GROUP_SEPARATORS
        ):
            continue
        if r.starts(i) and r.ends(i + 2) and us_ssn_ok(digs[i], digs[i + 1], digs[i + 2]):
            return True
    if r.n == 1 and len(digs[0]) == 9 and r.left_ok and r.end_ok:
        d = digs[0]
        return us_ssn_ok(d[:3], d[3:5], d[5:]) and _context_before(_SSN_CONTEXT, text, s)
    return False


def _de_tax_id_grouped(r: _Runs, i: int) -> bool:
    """Steuer-IdNr as printed on letters: "12 345 678 901"."""
    digs = r.digs
    return (
        [len(x) for x in digs[i + 1 : i + 4]] == [3, 3, 3]
        and r.seps[i : i + 3] == [" ", " ", " "]
        and r.ends(i + 3)
        and de_tax_id_ok("".join(digs[i : i + 4]))
    )


def _national_ids(text: str, s: int, e: int, r: _Runs) -> Iterator[Span]:
    digs, seps = r.digs, r.seps
    for i in range(r.n):
        d = digs[i]
        if not r.starts(i):
            continue
        size = len(d)
        if size == 18 and r.ends(i) and cn_resident_id_ok(d):
            yield PiiKind.CN_RESIDENT_ID, s, e
        elif size == 17 and i == r.n - 1 and e < len(text) and text[e] in "Xx":
            if (e + 1 == len(text) or not _word(text[e + 1])) and cn_resident_id_ok(d + "X"):
                yield PiiKind.CN_RESIDENT_ID, s, e + 1
        elif (size == 11 and r.ends(i) and de_tax_id_ok(d)) or (
            size == 2 and _de_tax_id_grouped(r, i)
        ):
            yield PiiKind.DE_TAX_ID, s, e
    # A BSN is nine digits ("123456782" or "1234.56.782") and needs the word nearby.
    if r.left_ok and r.end_ok:
        if r.n == 1 and len(digs[0]) == 9:
            bsn = digs[0]
        elif [len(x) for x in digs] == [4, 2, 3] and seps == [".", "."]:
            bsn = "".join(digs)
        else:
            return
        if nl_bsn_ok(bsn) and _context_before(_BSN_CONTEXT, text, s):
            yield PiiKind.NL_BSN, s, e


def _nanp(r: _Runs) -> bool:
    """North American: (NXX) NXX-XXXX, NXX-NXX-XXXX, NXX.NXX.XXXX, NXX NXX XXXX."""
    digs, seps = r.digs, r.seps
    for i in range(r.n - 2):
        if (len(digs[i]), len(digs[i + 1]), len(digs[i + 2])) != (3, 3, 4):
            continue
        s1, s2 = seps[i], seps[i + 1]
        if digs[i][0] in "01" or digs[i + 1][0] in "01" or s2 not in _GROUP_SEPARATORS:
            continue
        if s1.startswith(")"):
            if not (seps[i - 1].endswith("(") if i > 0 else r.opened):
                continue
        elif s1 not in _GROUP_SEPARATORS:
            continue
        if r.starts(i) and r.ends(i + 2):
            return True
    return False


def _phone(r: _Runs, plus: bool) -> bool:
    digs, seps = r.digs, r.seps
    # International: "+" or "00", country code 1-9, 8 to 15 digits in all (E.164).
    if plus or (r.left_ok and r.n > 1 and digs[0].startswith("00") and len(digs[0]) <= 5):
        country = digs[0] if plus else (digs[0][2:] or digs[1])
        if country[0] == "0":
            return False
        total = 0 if plus else -2
        for j in range(r.n):
            total += len(digs[j])
            if total > 15:
                return False
            if total >= 8 and r.ends(j):
                return True
        return False
    if _nanp(r):
        return True
    # National with a trunk 0: "020 7946 0958", "030/1234567", "(030) 1234567",
    # "01 23 45 67 89", or compact "07700900123". Dots mean dates, not phones.
    first = digs[0]
    if not (r.left_ok and first[0] == "0" and len(first) >= 2 and first[1] != "0"):
        return False
    if len(first) in (10, 11) and r.ends(0):
        return True
    if r.n == 1 or len(first) > 5:
        return False
    sep: str | None
    if seps[0].startswith(")"):
        if not r.opened:
            return False
        sep = None  # the separator after "(0xx) " decides the rest
    elif seps[0] in _TRUNK_SEPARATORS:
        sep = seps[0]
    else:
        return False
    # One separator throughout: "01-02-2024 10 30" is a date and a time.
    total = len(first)
    for j in range(1, r.n):
        if j > 1:
            here = seps[j - 1]
            if sep is None and here in _TRUNK_SEPARATORS:
                sep = here
            elif here != sep:
                break
        if len(digs[j]) < 2:
            break
        total += len(digs[j])
        if total > 12:
            break
        if total >= 10 and r.ends(j):
            return True
    return False


def _first_digit(text: str) -> int:
    """Where the first ASCII digit of ``text`` may be (``len(text)`` if it has none):
    exact for ASCII text, found by a byte mapping and ``find`` (a tenth of the
    regex's scan); 0 (scan it all) for other text."""
    if not text.isascii():
        return 0
    at = text.encode().translate(_DIGITS_AS_ZERO).find(b"0")
    return len(text) if at == -1 else at


def scan_numbers(text: str) -> Iterator[Span]:
    """Every numeric finding in ``text``, as (kind, start, end)."""
    # Every cluster starts with a digit: the scan starts at the first one.
    for m in _CLUSTER.finditer(text, _first_digit(text)):
        s, e = m.span()
        if s >= 2:
            # "AB 12 34 56 C" or "AB123456C": letters right before the digits.
            p = s - 3 if text[s - 1] == " " else s - 2
            if p >= 0 and text[p : p + 2].isalpha():
                end = _nino_end(text, p)
                if end != -1:
                    yield PiiKind.UK_NINO, p, max(end, e)
        if e - s < 8:
            continue  # the look-ahead counted trailing separators ("3 2024. ")
        if s >= 2:
            # "DE89 3704 ...", "GB82 WEST 1234 ...": letters right before the digit run
            # (or before the space before it) and the country code a little further back.
            before = text[s - 1]
            near = before.isupper() or (before in " -." and text[s - 2].isupper())
            if near:
                iban = _iban_span(text, s, e)
                if iban is not None:
                    yield PiiKind.IBAN, iban[0], max(iban[1], e)
                    continue  # its digit groups are not a phone number or a card
        # A leading "+" marks an international number, unless it is arithmetic ("1+2").
        plus = s > 0 and text[s - 1] == "+" and (s == 1 or not _word(text[s - 2]))
        parts = _NON_DIGITS.split(m.group())
        digits = sum(map(len, parts[0::2]))
        # Every remaining kind has 9+ digits, except "+"/"00" phones with 8: this drops
        # dates ("2024-10-15") and versions before any further work.
        if digits < 8 or (digits == 8 and not plus and not parts[0].startswith("00")):
            continue
        r = _Runs(text, s, e, parts)
        start = s - 1 if plus else s
        if _phone(r, plus):
            yield PiiKind.PHONE, start, e
        if _card(r, plus):
            yield PiiKind.CARD, start, e
        if _us_ssn(text, s, r):
            yield PiiKind.US_SSN, s, e
        yield from _national_ids(text, s, e, r)
