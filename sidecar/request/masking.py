"""Masking: detected values out before a cloud call, back in the answer.

Each masked value gets a placeholder such as ``EMAIL_kqzvbtrmxw``: the detector's
label and ten consonants from an HMAC of the value under a key that lives only in
this process. The same value always gets the same placeholder (so a model sees a
consistent conversation and a conversation's next turn masks alike), the code
cannot be reversed or brute-forced without the key (a phone number has few
enough digits to enumerate), and it has no digit and no ``@``, so no detector
mistakes a placeholder for a value.

Values are replaced wherever they occur in the body sent upstream (the internal
chat body, whatever API the client spoke), and placeholders are replaced back in
the answer: a whole JSON body, or a stream event by event, where a placeholder
may arrive split over several deltas (a model emits it token by token) and the
bytes split anywhere. Tool-call arguments are JSON text, so a value restored into
them is JSON-escaped. Nothing here logs; ``repr`` never shows a value.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from hashlib import sha256
from typing import Any

from .privacy import CUSTOM_PREFIX

_KEY = secrets.token_bytes(32)
_CODE_ALPHABET = "bcdfghjkmnpqrstvwxz"
_CODE_LENGTH = 10
_LABEL_CHARS = re.compile(r"[^A-Z0-9]+")
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_TRIE_MAX = 256
_EVENT_END = re.compile(rb"\r?\n\r?\n")
# Delta fields that carry model text in a chat-completion chunk.
_TEXT_FIELDS = ("content", "refusal", "reasoning_content")


def placeholder(detector: str, value: str) -> str:
    """The stable placeholder of ``value`` as found by ``detector``."""
    name = detector.removeprefix(CUSTOM_PREFIX)
    label = _LABEL_CHARS.sub("_", name.upper()).strip("_") or "VALUE"
    number = int.from_bytes(hmac.new(_KEY, f"{detector}\0{value}".encode(), sha256).digest())
    code = []
    for _ in range(_CODE_LENGTH):
        number, digit = divmod(number, len(_CODE_ALPHABET))
        code.append(_CODE_ALPHABET[digit])
    return f"{label}_{''.join(code)}"


def _trie(words: Iterable[str]) -> str:
    """One pattern matching any of ``words``, longest first, as a prefix tree: a
    plain alternation of a thousand values tries each at every position. Very long
    values (the tree is built recursively) make a plain alternation instead."""
    words = list(words)
    if max(map(len, words)) > _TRIE_MAX:
        return "|".join(map(re.escape, sorted(words, key=len, reverse=True)))
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def pattern(node: dict[str, Any]) -> str:
        ends = "" in node
        branches = [re.escape(ch) + pattern(child) for ch, child in node.items() if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        if ends:
            return f"(?:{body})?" if len(branches) == 1 and len(body) > 1 else f"{body}?"
        return body

    return pattern(root)


def _json_escaped(value: str) -> str:
    return _JSON.encode(value)[1:-1]


class Masking:
    """The values of one request and their placeholders (never logged)."""

    __slots__ = (
        "_escaped",
        "_find_placeholders",
        "_find_values",
        "_longest",
        "_originals",
        "_placeholders",
        "_prefixes",
    )

    def __init__(self, values: Iterable[tuple[str, str]]) -> None:
        """``values``: (detector, original text) pairs; the first detector of a value names it."""
        by_value: dict[str, str] = {}
        for detector, value in values:
            by_value.setdefault(value, placeholder(detector, value))
        if not by_value:
            raise ValueError("nothing to mask")
        self._originals = {ph: value for value, ph in by_value.items()}
        self._escaped = {ph: _json_escaped(value) for ph, value in self._originals.items()}
        self._find_values = re.compile(_trie(by_value))
        self._find_placeholders = re.compile(_trie(self._originals))
        self._placeholders = by_value
        self._prefixes = frozenset(ph[:n] for ph in self._originals for n in range(1, len(ph)))
        self._longest = max(len(ph) for ph in self._originals) - 1

    def __repr__(self) -> str:
        return f"Masking({len(self._originals)} values)"

    @property
    def count(self) -> int:
        return len(self._originals)

    # ------------------------------------------------------------ out

    def mask_text(self, text: str) -> str:
        return self._find_values.sub(lambda m: self._placeholders[m.group()], text)

    def apply(self, document: Any) -> Any:
        """A copy of a parsed JSON document with every value replaced in every string
        value (keys are left as they are: a value found in a key is never masked)."""
        if isinstance(document, str):
            return self.mask_text(document)
        if isinstance(document, Mapping):
            return {k: self.apply(v) for k, v in document.items()}
        if isinstance(document, list):
            return [self.apply(v) for v in document]
        return document

    # ------------------------------------------------------------ back

    def restore_text(self, text: str, *, escaped: bool = False) -> str:
        table = self._escaped if escaped else self._originals
        return self._find_placeholders.sub(lambda m: table[m.group()], text)

    def restore_document(self, document: Any, *, escaped: bool = False) -> Any:
        """A parsed answer with placeholders replaced: raw text in content, JSON-escaped
        text inside ``arguments`` (JSON text carried in a string)."""
        if isinstance(document, str):
            return self.restore_text(document, escaped=escaped)
        if isinstance(document, Mapping):
            return {
                k: self.restore_document(v, escaped=escaped or k == "arguments")
                for k, v in document.items()
            }
        if isinstance(document, list):
            return [self.restore_document(v, escaped=escaped) for v in document]
        return document

    def restore_json(self, payload: bytes) -> bytes:
        """A whole JSON answer with its placeholders restored."""
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError):
            # Not JSON after all: restore in place (inside JSON strings, escaped).
            return self.restore_text(payload.decode("utf-8", "replace"), escaped=True).encode()
        return _JSON.encode(self.restore_document(document)).encode()

    def stream(self) -> StreamRestorer:
        return StreamRestorer(self)

    def held_back(self, text: str) -> int:
        """How many trailing characters of ``text`` may begin a placeholder."""
        for n in range(min(len(text), self._longest), 0, -1):
            if text[-n:] in self._prefixes:
                return n
        return 0


class StreamRestorer:
    """Restores a chat-completion SSE stream fed as bytes split anywhere.

    Text deltas are held back while they end in what may be the start of a
    placeholder, and released (restored) when the next delta of the same field
    shows what it was, when the choice finishes, or at the end of the stream."""

    def __init__(self, masking: Masking) -> None:
        self._masking = masking
        self._buffer = b""
        self._carry: dict[tuple[int, str, int], str] = {}  # (choice, field, tool) -> text
        self._envelope: dict[str, Any] = {}

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out: list[bytes] = []
        while True:
            m = _EVENT_END.search(self._buffer)
            if m is None:
                break
            event, self._buffer = self._buffer[: m.start()], self._buffer[m.end() :]
            out.append(self._event(event))
        return b"".join(out)

    def finish(self) -> bytes:
        """What is still held back, as one last chunk (call when the stream ends)."""
        rest, self._buffer = self._buffer, b""
        flushed = self._flush_all()
        return flushed + (self._event(rest) if rest.strip() else b"")

    def _event(self, event: bytes) -> bytes:
        lines = event.split(b"\n")
        out: list[bytes] = []
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line.startswith(b"data:"):
                out.append(line)
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return self._flush_all() + b"\n".join([*out, line]) + b"\n\n"
            try:
                chunk = json.loads(payload)
            except (ValueError, RecursionError):
                out.append(line)
                continue
            if isinstance(chunk, dict) and isinstance(chunk.get("choices"), list):
                self._restore_chunk(chunk)
            out.append(b"data: " + _JSON.encode(chunk).encode())
        return b"\n".join(out) + b"\n\n"

    def _restore_chunk(self, chunk: dict[str, Any]) -> None:
        self._envelope = {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}
        for choice in chunk["choices"]:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            final = choice.get("finish_reason") is not None
            for field in _TEXT_FIELDS:
                if isinstance(delta.get(field), str) or (
                    final and (index, field, -1) in self._carry
                ):
                    delta[field] = self._text(index, field, -1, delta.get(field) or "", final)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                        tool = call.get("index", 0)
                        function["arguments"] = self._text(
                            index, "arguments", tool, function["arguments"], final
                        )
            if final:
                self._flush_tools(index, delta)

    def _text(self, choice: int, field: str, tool: int, text: str, final: bool) -> str:
        key = (choice, field, tool)
        text = self._carry.pop(key, "") + text
        held = 0 if final else self._masking.held_back(text)
        if held:
            self._carry[key] = text[-held:]
            text = text[:-held]
        return self._masking.restore_text(text, escaped=field == "arguments")

    def _flush_tools(self, choice: int, delta: dict[str, Any]) -> None:
        for key in [k for k in self._carry if k[0] == choice and k[1] == "arguments"]:
            rest = self._masking.restore_text(self._carry.pop(key), escaped=True)
            calls = delta.setdefault("tool_calls", [])
            calls.append({"index": key[2], "function": {"arguments": rest}})

    def _flush_all(self) -> bytes:
        if not self._carry:
            return b""
        choices: dict[int, dict[str, Any]] = {}
        for (choice, field, tool), text in sorted(self._carry.items()):
            delta = choices.setdefault(choice, {})
            restored = self._masking.restore_text(text, escaped=field == "arguments")
            if field == "arguments":
                call = {"index": tool, "function": {"arguments": restored}}
                delta.setdefault("tool_calls", []).append(call)
            else:
                delta[field] = restored
        self._carry.clear()
        chunk = {
            **self._envelope,
            "choices": [
                {"index": i, "delta": d, "finish_reason": None} for i, d in sorted(choices.items())
            ],
        }
        return b"data: " + _JSON.encode(chunk).encode() + b"\n\n"
