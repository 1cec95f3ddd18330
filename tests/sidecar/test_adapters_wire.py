"""Byte-level helpers of the adapters: usage search, SSE filtering, error bodies."""

from __future__ import annotations

import itertools
import json
from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st

from aegis.sidecar.adapters.base import (
    ErrorKind,
    UpstreamCall,
    UpstreamError,
    Usage,
    parse_retry_after,
    sanitize_message,
)
from aegis.sidecar.adapters.wire import SseFilter, error_fields, usage_from_body


def test_usage_from_body_reads_the_top_level_usage() -> None:
    doc = {
        "choices": [{"message": {"content": 'he said "usage": {"prompt_tokens": 99}'}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        "system_fingerprint": "fp",
    }
    assert usage_from_body(json.dumps(doc).encode()) == Usage(3, 4)
    assert usage_from_body(b'{"usage": null}') is None
    assert usage_from_body(b'{"choices": []}') is None
    assert usage_from_body(b"not json") is None
    embeddings = {"data": [], "usage": {"prompt_tokens": 5, "total_tokens": 5}}
    assert usage_from_body(json.dumps(embeddings).encode()) == Usage(5, 0)


@given(
    text=st.text(max_size=50),
    prompt=st.integers(0, 10**6),
    completion=st.integers(0, 10**6),
    usage_first=st.booleans(),
)
def test_usage_from_body_matches_a_full_parse(
    text: str, prompt: int, completion: int, usage_first: bool
) -> None:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    content = {"choices": [{"message": {"content": text, "usage": "x"}}]}
    doc = {"usage": usage, **content} if usage_first else {**content, "usage": usage}
    raw = json.dumps(doc, ensure_ascii=False).encode()
    assert usage_from_body(raw) == Usage(prompt, completion)


def _event(doc: object) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def test_sse_filter_drops_only_the_usage_only_chunk() -> None:
    content = _event({"choices": [{"delta": {"content": "hi"}}], "usage": None})
    usage = _event({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    done = b"data: [DONE]\n\n"
    dropping = SseFilter(keep_usage_chunk=False)
    assert dropping.feed(content) is content
    assert dropping.feed(usage + done) == done
    assert dropping.usage == Usage(1, 2) and dropping.done
    keeping = SseFilter(keep_usage_chunk=True)
    assert keeping.feed(content + usage + done) == content + usage + done
    assert keeping.usage == Usage(1, 2)
    mixed = _event(
        {"choices": [{"delta": {}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    )
    assert SseFilter(keep_usage_chunk=False).feed(mixed) == mixed
    unfinished = SseFilter(keep_usage_chunk=False)
    unfinished.feed(_event({"choices": [{"delta": {"content": "[DONE]"}}]}))
    assert not unfinished.done


def test_error_fields_of_every_shape() -> None:
    openai = {"error": {"message": "m1", "type": "t", "param": None, "code": "c1"}}
    assert error_fields(json.dumps(openai).encode()) == ("m1", "c1")
    assert error_fields(b'{"error": "model not found"}') == ("model not found", None)
    native = {"code": "InvalidApiKey", "message": "Invalid API-key provided.", "request_id": "r"}
    assert error_fields(json.dumps(native).encode()) == (
        "Invalid API-key provided.",
        "InvalidApiKey",
    )
    assert error_fields(b"<html>502</html>")[1] is None


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    now = 1_700_000_000.0
    assert parse_retry_after({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == 30.0


def test_error_messages_are_sanitised() -> None:
    text = sanitize_message("bad key Bearer sk-abcdefghijkl\nsecond line" + "x" * 500)
    assert "sk-abcdefghijkl" not in text and "\n" not in text and len(text) <= 300
    error = UpstreamError(ErrorKind.STATUS, "Incorrect API key provided: sk-12345678", status=401)
    assert "12345678" not in str(error) and not error.retriable
    assert UpstreamError(ErrorKind.STATUS, "x", status=503).retriable
    assert UpstreamError(ErrorKind.TIMEOUT, "x").retriable


def test_call_reports_what_the_client_asked() -> None:
    call = UpstreamCall(body={"stream_options": {"include_usage": True}}, models=["m"])
    assert call.client_wants_usage
    assert not UpstreamCall(body={}, models=["m"]).client_wants_usage
    assert UpstreamCall(body={}, models=["m"], deadline=10.0).remaining(now=4.0) == 6.0


def _stream(n: int, *, crlf: bool = False) -> tuple[bytes, bytes]:
    """(a whole upstream stream with a usage chunk, the same without it)."""
    content = b"".join(
        _event({"choices": [{"delta": {"content": f"w{i}"}}], "usage": None}) for i in range(n)
    )
    usage = _event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n}})
    done = b"data: [DONE]\n\n"
    whole, without = content + usage + done, content + done
    if crlf:
        whole = whole.replace(b"\n", b"\r\n")
    return whole, without


@given(
    n=st.integers(0, 12),
    cuts=st.lists(st.integers(0, 4000), max_size=30),
    keep=st.booleans(),
    crlf=st.booleans(),
)
def test_sse_filter_is_independent_of_read_boundaries(
    n: int, cuts: list[int], keep: bool, crlf: bool
) -> None:
    whole, without = _stream(n, crlf=crlf)
    points = sorted({min(c, len(whole)) for c in cuts} | {0, len(whole)})
    sse = SseFilter(keep_usage_chunk=keep)
    out = b"".join(sse.push(whole[a:b]) for a, b in itertools.pairwise(points))
    out += sse.flush()
    expected = whole.replace(b"\r\n", b"\n") if keep else without
    assert out == expected
    assert sse.usage == Usage(7, n) and sse.done
