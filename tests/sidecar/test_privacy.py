"""PII detection: each kind's positives and look-alikes, checksums, speed, and the
rule that detection only ever raises a request's data class."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aegis.sidecar.contract import PrivacySpec
from aegis.sidecar.request import PiiKind, detect, detection_can_raise, effective_class
from aegis.sidecar.request.checksums import (
    cn_resident_id_ok,
    de_tax_id_ok,
    iban_ok,
    luhn_ok,
    nl_bsn_ok,
    us_ssn_ok,
)

# --------------------------------------------------------------- helpers


def luhn_complete(prefix: str) -> str:
    """Append the Luhn check digit to ``prefix``."""
    for check in "0123456789":
        if luhn_ok(prefix + check):
            return prefix + check
    raise AssertionError("unreachable")


def cn_id(body17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip(body17, weights, strict=True))
    return body17 + "10X98765432"[total % 11]


def make_iban(country: str, bban: str) -> str:
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


# Public test/example values from the issuers' and registries' documentation.
VALID_IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "NL91 ABNA 0417 1643 00",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NO93 8601 1117 947",
    "CH93 0076 2011 6238 5295 7",
    "BE68 5390 0754 7034",
    "DE89370400440532013000",
]
VALID_CARDS = [
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4111111111111111",
    "5555 5555 5555 4444",
    "3782 822463 10005",  # Amex 4-6-5
    "6011 0009 9013 9424",
    "4000 0566 5566 5556",
]
STEUER_IDS = ["86095742719", "47036892816", "65929970489", "57549285017", "25768131411"]


# --------------------------------------------------------------- detection, per kind


@pytest.mark.parametrize(
    "text",
    [
        "write to john.doe@example.com today",
        "a@b.co",
        "Mail:first.last+tag@sub.example.co.uk, thanks",
        "<jane_roe-99@EXAMPLE.ORG>",
    ],
)
def test_email_found(text: str) -> None:
    assert detect(text) == {PiiKind.EMAIL}


@pytest.mark.parametrize(
    "text",
    ["@property decorator", "user@localhost", "ab@cd", "foo@bar.c0m", "x @ y", "a@.com"],
)
def test_email_lookalikes_ignored(text: str) -> None:
    assert PiiKind.EMAIL not in detect(text)


@pytest.mark.parametrize(
    "text",
    [
        "call +44 20 7946 0958 now",
        "+1 (212) 555-0187",
        "+49301234567",
        "0049 30 1234567",
        "call (212) 555-0187",
        "212-555-0187",
        "212.555.0187",
        "tel:212 555 0187.",
        "020 7946 0958",
        "07700 900123",
        "07700900123",
        "030/1234567",
        "(030) 1234567",
        "01 23 45 67 89",
        "212.555-0187",  # mixed separators hide nothing
        "+44-20.7946 0958",
    ],
)
def test_phone_found(text: str) -> None:
    assert detect(text) == {PiiKind.PHONE}


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 revenue grew 12.5% to $1,299.99 (vs 2023).",
        "released 2024-10-15 at 10:30",
        "01.02.2024",
        "01-02-2024 10 30",
        "12/31/2024 10:30",
        "212-155-0187",  # exchange code starts with 1: not a NANP number
        "112-555-0187",  # area code starts with 1
        "x212-555-0187",  # glued to a word
        "1+23456789",  # arithmetic
        "+4930123456789012345",  # longer than E.164 allows
        "order 1234567890",
        "version 1.2.3.4567890",
        "pi is 3.14159265358979",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "sha 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
    ],
)
def test_numbers_that_are_not_pii(text: str) -> None:
    assert detect(text) == frozenset()


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_iban_found(iban: str) -> None:
    assert detect(f"please pay to {iban}. Thanks") == {PiiKind.IBAN}


def test_generated_iban_of_another_country_found() -> None:
    iban = make_iban("PL", "109010140000071219812874")
    assert iban_ok(iban)
    assert detect(f"konto {iban}") == {PiiKind.IBAN}


@pytest.mark.parametrize(
    "text",
    [
        "DE89 3704 0044 0532 0130 01",  # check digits wrong
        "DE89 3704 0044 0532 0130",  # too short for DE
        "XX89 3704 0044 0532 0130 00",  # unknown country
        "ADE89370400440532013000",  # glued to a word
    ],
)
def test_iban_lookalikes_ignored(text: str) -> None:
    assert PiiKind.IBAN not in detect(text)


@pytest.mark.parametrize("card", VALID_CARDS)
def test_card_found(card: str) -> None:
    assert PiiKind.CARD in detect(f"card {card} exp 12/26")


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # Luhn fails
        "1111 1111 1111 1117",  # Luhn passes but no issuer starts with 1
        "0.4532015112830366",  # a decimal fraction, although Luhn-valid
        "41 11 11 11 11 11 11 11",  # not a card grouping
        "4111 11 1111 1111 1111",  # a two-digit group is no card grouping
    ],
)
def test_card_lookalikes_ignored(text: str) -> None:
    assert PiiKind.CARD not in detect(text)


@pytest.mark.parametrize("text", ["ssn 123-45-6789", "SSN 123 45 6789", "SSN: 123456789"])
def test_us_ssn_found(text: str) -> None:
    assert detect(text) == {PiiKind.US_SSN}


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",
        "666-12-3456",
        "912-12-3456",
        "123-00-4567",
        "123-45-0000",
        "123-45-6789-0000",  # part of a longer chain
        "order 123456789",  # nine digits without the word for it
    ],
)
def test_us_ssn_lookalikes_ignored(text: str) -> None:
    assert PiiKind.US_SSN not in detect(text)


@pytest.mark.parametrize(
    "text", ["NINO AB 12 34 56 C", "AB123456C", "ni: CE 12 34 56 D", "AB123456"]
)
def test_uk_nino_found(text: str) -> None:
    assert detect(text) == {PiiKind.UK_NINO}


@pytest.mark.parametrize("text", ["QQ123456C", "GB123456A", "DA123456A", "AO123456A", "XAB123456C"])
def test_uk_nino_invalid_prefixes_ignored(text: str) -> None:
    assert PiiKind.UK_NINO not in detect(text)


def test_cn_resident_id_found() -> None:
    assert detect("id 11010519491231002X ok") == {PiiKind.CN_RESIDENT_ID}
    generated = cn_id("44030419900307123")
    assert detect(f"身份证 {generated}") == {PiiKind.CN_RESIDENT_ID}


@pytest.mark.parametrize(
    "number",
    [
        "11010519491231002Y",  # not a check character
        "11010519491231002 X",  # separated
        "11010519491332002X",  # month 13
        "99010519491231002X",  # no such region
    ],
)
def test_cn_resident_id_lookalikes_ignored(number: str) -> None:
    assert PiiKind.CN_RESIDENT_ID not in detect(number)


@pytest.mark.parametrize("number", STEUER_IDS)
def test_de_tax_id_found(number: str) -> None:
    assert detect(f"Steuer-ID {number}") == {PiiKind.DE_TAX_ID}


def test_de_tax_id_grouped_found() -> None:
    assert detect("IdNr 86 095 742 719") == {PiiKind.DE_TAX_ID}


def test_nl_bsn_needs_context() -> None:
    assert detect("BSN 123456782") == {PiiKind.NL_BSN}
    assert detect("burgerservicenummer: 1234.56.782") == {PiiKind.NL_BSN}
    assert detect("order 123456782") == frozenset()  # no context word
    assert detect("BSN 123456783") == frozenset()  # 11-proof fails


def test_several_kinds_reported_once_each_without_text() -> None:
    text = (
        "jane@example.com, +44 20 7946 0958, DE89 3704 0044 0532 0130 00, "
        "4111 1111 1111 1111, again jane@example.com and +44 20 7946 0958"
    )
    found = detect(text)
    assert found == {PiiKind.EMAIL, PiiKind.PHONE, PiiKind.IBAN, PiiKind.CARD}
    assert all(isinstance(kind, PiiKind) for kind in found)
    assert {kind.value for kind in found} == {"email", "phone", "iban", "card"}


# --------------------------------------------------------------- checksums


def test_checksum_functions() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82WEST1234569876543")  # length for GB is 22
    assert cn_resident_id_ok("11010519491231002X") and cn_resident_id_ok("11010519491231002x")
    assert not cn_resident_id_ok("11010518991231002X")  # born before 1900
    assert all(de_tax_id_ok(n) for n in STEUER_IDS)
    assert not de_tax_id_ok("86095742718")  # check digit
    assert not de_tax_id_ok("01234567890")  # leading zero
    assert not de_tax_id_ok("12345678903")  # no repeated digit
    assert not de_tax_id_ok("11123456780")  # a digit three times in a row
    assert nl_bsn_ok("123456782") and not nl_bsn_ok("000000000")
    assert us_ssn_ok("123", "45", "6789") and not us_ssn_ok("900", "45", "6789")


# --------------------------------------------------------------- effective class

PRIVACY = PrivacySpec()  # public < internal < confidential < pii < hipaa; detected: pii


def test_detection_raises_to_detected_class() -> None:
    assert effective_class("public", frozenset({PiiKind.EMAIL}), PRIVACY) == "pii"
    assert effective_class(None, frozenset({PiiKind.PHONE}), PRIVACY) == "pii"


def test_detection_never_lowers_a_stricter_header() -> None:
    assert effective_class("hipaa", frozenset({PiiKind.EMAIL}), PRIVACY) == "hipaa"


def test_no_detection_keeps_header_or_default() -> None:
    assert effective_class("public", frozenset(), PRIVACY) == "public"
    assert effective_class(None, frozenset(), PRIVACY) == "internal"


def test_detection_can_raise() -> None:
    assert detection_can_raise("public", PRIVACY)
    assert detection_can_raise(None, PRIVACY)
    assert not detection_can_raise("pii", PRIVACY)
    assert not detection_can_raise("hipaa", PRIVACY)
    assert not detection_can_raise("public", PrivacySpec(detect=False))


@given(
    header=st.sampled_from([None, *PRIVACY.classes]),
    detected=st.frozensets(st.sampled_from(list(PiiKind))),
    detected_class=st.sampled_from(PRIVACY.classes),
)
def test_property_detection_never_lowers(
    header: str | None, detected: frozenset[PiiKind], detected_class: str
) -> None:
    spec = PrivacySpec(detected_class=detected_class)
    declared = header if header is not None else spec.default_class
    result = effective_class(header, detected, spec)
    assert spec.rank(result) >= spec.rank(declared)
    assert result in (declared, detected_class)
    if not detected:
        assert result == declared


_FILLER = st.text(alphabet="abcdefghij klmnop,;:!?", max_size=200)


@given(before=_FILLER, after=_FILLER, body=st.text(alphabet="0123456789", min_size=12, max_size=15))
def test_property_a_luhn_valid_card_in_prose_is_found(before: str, after: str, body: str) -> None:
    card = luhn_complete("4" + body)
    assert PiiKind.CARD in detect(f"{before} {card} {after}")


@given(st.text(max_size=300))
def test_property_detect_accepts_any_text(text: str) -> None:
    assert detect(text) <= set(PiiKind)


# --------------------------------------------------------------- speed


def _prompt() -> str:
    base = (
        "You are a support assistant. Summarise the ticket below in under 200 words and "
        "list next steps. Order 2024-10-15 of 3 items for $1,299.99 arrived late (Q3 2024); "
        "the customer rated us 4.5 out of 5 and asked for a refund of 12.5 percent. "
    )
    return (base * 20)[:2048]


@pytest.mark.parametrize(
    "chunk",
    ["1 ", "1-", "a@", "@a.", "DE89 ", "AB 12 ", "(1) ", "9" * 50 + " ", "a.b.c@" * 3],
)
def test_pathological_input_scans_in_linear_time(chunk: str) -> None:
    small, large = chunk * 2_000, chunk * 20_000
    t_small, t_large = cpu_seconds(small), cpu_seconds(large)
    # 10x the input: linear stays near 10x, quadratic would be near 100x.
    assert t_large < max(40 * t_small, 0.05), (t_small, t_large)


def cpu_seconds(text: str) -> float:
    """CPU time of this thread for one scan, the least of three: what the scan costs,
    not how busy the machine is (other processes' load does not count)."""
    times = []
    for _ in range(3):
        started = time.thread_time()
        detect(text)
        times.append(time.thread_time() - started)
    return min(times)
