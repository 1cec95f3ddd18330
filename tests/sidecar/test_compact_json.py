"""orjson encodes what the stdlib's compact, non-ASCII encoder did, byte for byte.

The upstream request bodies (``compact_json``) and the ledger rows (``encode_body``,
spooled and sent to PostgreSQL) moved from the stdlib to orjson for speed; a row
spooled by an older sidecar and one spooled now must read the same, and an upstream
must receive the same request. Where orjson refuses (an integer beyond 64 bits, which
a client may pass through), the stdlib's bytes are used.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.sidecar.jsonbytes import compact_json
from aegis.sidecar.ledger.spool import decode, encode, encode_body
from tests.sidecar.ledger_helpers import record

TEXT = st.text(st.characters(exclude_categories=["Cs"]))  # no lone surrogates: never valid
SCALARS = st.none() | st.booleans() | st.integers(-(10**40), 10**40) | TEXT
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


def stdlib(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


@settings(max_examples=300, derandomize=True)
@given(DOCS)
def test_request_bodies_are_the_stdlibs_bytes(doc: Any) -> None:
    assert compact_json(doc) == stdlib(doc)


@given(st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=200, derandomize=True)
def test_floats_keep_their_value(value: float) -> None:
    # orjson writes 1e16 where the stdlib writes 1e+16: the same number.
    assert json.loads(compact_json({"temperature": value})) == {"temperature": value}


@settings(max_examples=200, derandomize=True)
@given(TEXT, TEXT, st.integers(0, 2**31 - 1))
def test_ledger_rows_are_the_stdlibs_bytes(model: str, budgets: str, tokens: int) -> None:
    row = record(1, model=model, tokens_in=tokens)
    body = encode_body(row, budgets)
    assert body == stdlib(json.loads(body))
    spooled = decode(encode(7, body))
    assert spooled is not None and spooled.record == row and spooled.budgets == budgets


def test_a_row_orjson_refuses_is_written_by_the_stdlib() -> None:
    row = record(1, tokens_in=10**30)  # beyond 64 bits: the database refuses the row later
    body = encode_body(row, "")
    assert 10**30 in json.loads(body)
    assert body == stdlib(json.loads(body))
    assert compact_json({"seed": 10**30}) == b'{"seed":1000000000000000000000000000000}'


# Run in a fresh interpreter: a long test process has freed memory that new objects
# would reuse without growing RSS. orjson's own bytes keep ~4 KiB of spare buffer.
_HELD = """
import sys
from aegis.sidecar.jsonbytes import compact_json
from aegis.sidecar.ledger.spool import encode_body
from tests.sidecar.ledger_helpers import record

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")

row, doc = record(1), {"model": "m", "messages": [{"role": "user", "content": "hi " * 100}]}
before = rss_kib()
held = [encode_body(row, "b") for _ in range(20_000)]
held += [compact_json(doc) for _ in range(20_000)]
print((rss_kib() - before) * 1024 / len(held), max(len(b) for b in held))
"""


def test_encoded_rows_and_bodies_held_in_memory_cost_their_size() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _HELD],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],  # where ``tests`` imports from
    )
    per_object, longest = (float(v) for v in done.stdout.split())
    assert per_object < longest + 256, done.stdout  # not longest + 4 KiB
