"""The number scan starts at the first digit: the same findings, wherever the first
digit is, in ASCII and in other text."""

from __future__ import annotations

import pytest

from aegis.sidecar.request.pii_numbers import scan_numbers

SAMPLES = [
    "card 4111 1111 1111 1111 please",
    "IBAN DE89 3704 0044 0532 0130 00 for the refund",
    "my NI number is AB 12 34 56 C",
    "ssn: 123-45-6789",
    "call +44 20 7946 0958 or (555) 123-4567",
    "Größe 4111-1111-1111-1111, Straße",
    "2024-10-15 v1.2.3 and 42 apples",
]
PREFIXES = ["", "Summarise the ticket about the delayed delivery\n" * 20, "Café crème\n"]


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("prefix", PREFIXES, ids=["none", "ascii", "non-ascii"])
def test_findings_do_not_depend_on_where_the_first_digit_is(prefix: str, sample: str) -> None:
    alone = list(scan_numbers(sample))
    after = len(prefix)
    found = [
        (kind, start - after, end - after) for kind, start, end in scan_numbers(prefix + sample)
    ]
    assert found == alone
    assert bool(alone) == (not sample.startswith("2024"))  # dates and versions are not PII


def test_text_without_digits_has_no_findings() -> None:
    assert list(scan_numbers("no numbers here, only words\n" * 50)) == []
