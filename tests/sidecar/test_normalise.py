"""Normalisation: look-alikes folded per code point, invisible characters removed,
and every folded character traced back to the original one it came from."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from aegis.sidecar.request import detect, folds, normalise
from aegis.sidecar.request.normalise import FOLD, origins
from tests.sidecar.folds_sync import COMMAND

FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}


def test_folds_what_a_reader_reads_as_plain() -> None:
    assert normalise("john@example.com".translate(FULLWIDTH)) == "john@example.com"
    assert normalise("41\u200b11\u2060-11\ufeff11") == "4111-1111"
    assert normalise("\u0664\u0661\u0661\u0661") == "4111"  # Arabic-Indic digits
    assert normalise("12\u201334\u00a056") == "12-34 56"  # en dash, no-break space
    assert normalise("a\u3002b") == "a.b"  # ideographic full stop
    assert normalise("plain ascii") == "plain ascii"
    assert normalise("café 東京") == "café 東京"


def test_the_shipped_fold_table_is_the_one_this_unicode_database_gives() -> None:
    """The sidecar starts from folds.json (computing the table costs ~0.1 s a start);
    it must be exactly what the Unicode database of the interpreter says."""
    found = folds.shipped()
    assert found is not None, f"sidecar/request/folds.json is missing: run {COMMAND}"
    version, table = found
    assert version == unicodedata.unidata_version, f"folds.json is for Unicode {version}: {COMMAND}"
    assert table == folds.computed(), f"folds.json differs from the computed table: {COMMAND}"
    assert table == FOLD


_TEXT = st.text(
    alphabet=st.sampled_from([*"abc 01@.-", "é", "東", *(chr(c) for c in list(FOLD)[::40])]),
    max_size=80,
)


@given(_TEXT)
def test_every_folded_character_maps_back_to_its_origin(text: str) -> None:
    folded = normalise(text)
    assert folded == text.translate(FOLD)
    where = origins(text)
    assert len(where) == len(folded) + 1
    for i, ch in enumerate(folded):
        source = text[where[i]]
        assert ch in FOLD.get(ord(source), source)
    assert where == sorted(where)


@given(st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]))
def test_an_invisible_character_hides_nothing(mark: str) -> None:
    card = "4111 1111 1111 1111"
    for cut in range(1, len(card)):
        assert detect(f"pay {card[:cut]}{mark}{card[cut:]} now"), cut
