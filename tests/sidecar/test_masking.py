"""Masking: placeholders out, exact originals back, in JSON answers and in streams
split at every byte offset; and the privacy decision that chooses it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aegis.sidecar.contract import PrivacySpec, decode
from aegis.sidecar.request import Masking, assess, normalise, placeholder, scan_document

# Fullwidth letters and a zero-width space: restoration must give these exact characters.
EMAIL = "\uff4a\uff4f\uff48\uff4e.doe\u200b@example.com"
CARD = "4111-1111 1111.1111"
QUOTED = 'EMP-"7\\42"'  # a custom value with JSON specials


def masking() -> Masking:
    return Masking([("email", EMAIL), ("card", CARD), ("custom:emp", QUOTED)])


def test_placeholders_are_stable_opaque_and_undetectable() -> None:
    first = placeholder("email", EMAIL)
    assert first == placeholder("email", EMAIL)
    assert first != placeholder("email", EMAIL + "x")
    assert first.startswith("EMAIL_") and first[6:].isalpha()
    assert placeholder("custom:emp-id", "x").startswith("EMP_ID_")
    found = list(scan_document({"text": f"{first} {placeholder('card', CARD)}"}))
    assert found == []
    assert EMAIL not in repr(masking())


def test_mask_then_restore_json_is_exact_even_inside_tool_arguments() -> None:
    m = masking()
    body = {"messages": [{"role": "user", "content": f"mail {EMAIL}, card {CARD}, id {QUOTED}"}]}
    masked = m.apply(body)
    text = json.dumps(masked, ensure_ascii=False)
    assert EMAIL not in text and CARD not in text and QUOTED not in text
    sent = masked["messages"][0]["content"]
    answer = {
        "choices": [
            {
                "message": {
                    "content": f"You wrote: {sent}",
                    "tool_calls": [
                        {"function": {"name": "f", "arguments": json.dumps({"v": sent})}}
                    ],
                }
            }
        ]
    }
    restored = json.loads(m.restore_json(json.dumps(answer).encode()))
    message = restored["choices"][0]["message"]
    assert message["content"] == f"You wrote: mail {EMAIL}, card {CARD}, id {QUOTED}"
    arguments = json.loads(message["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"v": f"mail {EMAIL}, card {CARD}, id {QUOTED}"}


def _sse(chunks: list[dict[str, Any]]) -> bytes:
    events = [b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\n\n" for c in chunks]
    return b"".join(events) + b"data: [DONE]\n\n"


def _delta(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta: dict[str, Any] = dict(extra)
    if content is not None:
        delta["content"] = content
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _collect(stream: bytes) -> tuple[str, str]:
    """(content, tool arguments) of a chat-completion SSE stream."""
    content, arguments = [], []
    for event in stream.split(b"\n\n"):
        if not event.startswith(b"data: ") or event == b"data: [DONE]":
            continue
        chunk = json.loads(event[6:])
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or []:
                arguments.append(call["function"].get("arguments") or "")
    return "".join(content), "".join(arguments)


def _stream_with_split_placeholders(m: Masking) -> tuple[bytes, str, str]:
    """A stream whose placeholders arrive cut into pieces over several deltas."""
    email_ph = placeholder("email", EMAIL)
    card_ph = placeholder("card", CARD)
    text = f"Hi {email_ph}, your card {card_ph} and {placeholder('custom:emp', QUOTED)}."
    pieces = [text[i : i + 5] for i in range(0, len(text), 5)]
    args = json.dumps({"to": email_ph})
    arg_pieces = [args[i : i + 4] for i in range(0, len(args), 4)]
    chunks = [_delta(p) for p in pieces]
    chunks += [_delta(tool_calls=[{"index": 0, "function": {"arguments": p}}]) for p in arg_pieces]
    chunks.append(_delta(finish="stop"))
    want_text = f"Hi {EMAIL}, your card {CARD} and {QUOTED}."
    want_args = json.dumps({"to": EMAIL}, ensure_ascii=False)
    return _sse(chunks), want_text, want_args


def test_stream_restores_placeholders_split_at_every_byte_offset() -> None:
    m = masking()
    stream, want_text, want_args = _stream_with_split_placeholders(m)
    for cut in range(len(stream) + 1):
        restorer = m.stream()
        out = restorer.feed(stream[:cut]) + restorer.feed(stream[cut:]) + restorer.finish()
        text, args = _collect(out)
        assert text == want_text, cut
        assert json.loads(args) == json.loads(want_args), cut


def test_stream_fed_byte_by_byte_and_without_done_still_flushes() -> None:
    m = masking()
    ph = placeholder("email", EMAIL)
    stream = _sse([_delta("to " + ph[:3]), _delta(ph[3:])]).removesuffix(b"data: [DONE]\n\n")
    restorer = m.stream()
    out = b"".join(restorer.feed(stream[i : i + 1]) for i in range(len(stream)))
    out += restorer.finish()
    assert _collect(out)[0] == f"to {EMAIL}"


def test_text_that_only_looks_like_a_placeholder_start_is_released() -> None:
    m = masking()
    restorer = m.stream()
    out = restorer.feed(_sse([_delta("EMAIL_"), _delta("is a word"), _delta(finish="stop")]))
    assert _collect(out + restorer.finish())[0] == "EMAIL_is a word"


# --------------------------------------------------------------- the decision

MASK_PII = PrivacySpec(mask=["pii"])


def chat(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def test_masked_class_is_not_raised_and_the_masked_body_shows_nothing() -> None:
    body = chat(f"write to {EMAIL} about card {CARD}")
    decision = assess(body, None, None, MASK_PII)
    assert decision.data_class == "internal" and decision.declared == "internal"
    assert decision.detected == {"email", "card"}
    assert decision.masking is not None
    masked = decision.masking.apply(body)
    assert list(scan_document(masked)) == []
    assert normalise(EMAIL) not in json.dumps(masked)


def test_without_mask_the_class_is_raised() -> None:
    decision = assess(chat(f"to {EMAIL}"), None, None, PrivacySpec())
    assert decision.data_class == "pii" and decision.masking is None


def test_a_value_in_a_key_cannot_be_masked_and_raises() -> None:
    body = {**chat("hello"), "metadata": {EMAIL: "x"}}
    decision = assess(body, None, None, MASK_PII)
    assert decision.data_class == "pii" and decision.masking is None


def test_masking_fails_closed_when_the_internal_body_still_shows_a_value() -> None:
    # The translated body carries the value JSON-escaped: substitution cannot find it.
    original = {"input": f"to {EMAIL}"}
    translated = {"messages": [{"role": "user", "content": json.dumps(f"to {EMAIL}")}]}
    decision = assess(translated, original, None, MASK_PII)
    assert decision.data_class == "pii" and decision.masking is None


def test_declared_class_is_never_lowered_and_not_masked() -> None:
    decision = assess(chat(f"to {EMAIL}"), None, "hipaa", MASK_PII)
    assert decision.data_class == "hipaa" and decision.masking is None


def test_custom_pattern_raises_its_own_class() -> None:
    spec = decode(
        PrivacySpec, {"patterns": [{"name": "emp", "regex": r"EMP-[0-9]{6}", "dataClass": "hipaa"}]}
    )
    fullwidth = "EMP-123456".translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})
    decision = assess(chat(f"employee {fullwidth} asked"), None, None, spec)
    assert decision.data_class == "hipaa" and decision.detected == {"custom:emp"}


@pytest.mark.parametrize(
    ("regex", "error"),
    [
        (r"(a)\1", "not a valid RE2 pattern"),
        (r"(?=x)y", "not a valid RE2 pattern"),
        (r"x*", "matches the empty string"),
        (r"(?P<n>x)", "named groups"),
        ("x" * 513, "regex: Expected `str` of length <= 512"),
    ],
)
def test_custom_patterns_are_checked(regex: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        decode(PrivacySpec, {"patterns": [{"name": "p", "regex": regex, "dataClass": "pii"}]})
