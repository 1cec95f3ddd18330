"""Check digits and structure rules of the identifiers PII detection looks for.

Pure functions over already-extracted strings: a format that passes its checksum
is far more likely to be real than one that only looks right, which keeps
detection's false positives (requests needlessly forced local) rare.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

# IBAN length by country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
# First two digits of a Chinese resident id: province-level region codes.
_CN_REGIONS = frozenset(
    str(code)
    for code in (
        *range(11, 16), *range(21, 24), *range(31, 38), *range(41, 47),
        *range(50, 55), *range(61, 66), 71, 81, 82, 83,
    )
)  # fmt: skip
_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)

# IBAN check: letters count as two-digit numbers, A=10 ... Z=35.
_IBAN_LETTER_VALUES = {ord(c): str(ord(c) - 55) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_BSN_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)


def luhn_ok(digits: str) -> bool:
    """Luhn (mod 10) check used by payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """Country length and ISO 13616 mod-97 check of a compact, upper-case IBAN."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    if not (iban.isascii() and iban.isalnum()):
        return False
    return int((iban[4:] + iban[:4]).translate(_IBAN_LETTER_VALUES)) % 97 == 1


def cn_resident_id_ok(number: str) -> bool:
    """18-character Chinese resident id: region, birth date, ISO 7064 MOD 11-2."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    if number[:2] not in _CN_REGIONS:
        return False
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if born.year < 1900:
        return False
    total = sum((ord(c) - 48) * w for c, w in zip(number, _CN_WEIGHTS, strict=False))
    return "10X98765432"[total % 11] == number[17].upper()


def de_tax_id_ok(number: str) -> bool:
    """German Steuer-IdNr: 11 digits, digit-repetition rule, ISO 7064 MOD 11,10."""
    if len(number) != 11 or not number.isdigit() or number[0] == "0":
        return False
    head = number[:10]
    repeated = [(digit, n) for digit, n in Counter(head).items() if n > 1]
    # Exactly one digit occurs twice or three times (never three in a row).
    if len(repeated) != 1 or repeated[0][1] > 3:
        return False
    digit, n = repeated[0]
    if n == 3 and digit * 3 in head:
        return False
    product = 10
    for ch in head:
        s = (ord(ch) - 48 + product) % 10 or 10
        product = (s * 2) % 11
    return (11 - product) % 10 == ord(number[10]) - 48


def nl_bsn_ok(number: str) -> bool:
    """Dutch BSN 11-proof (elfproef) on nine digits."""
    if len(number) != 9 or not number.isdigit() or number == "000000000":
        return False
    total = sum((ord(c) - 48) * w for c, w in zip(number, _BSN_WEIGHTS, strict=True))
    return total % 11 == 0


def us_ssn_ok(area: str, group: str, serial: str) -> bool:
    """Exclude never-issued SSN ranges: area 000/666/9xx, group 00, serial 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
