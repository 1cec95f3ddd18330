"""Deterministic answers and token counts of the fake upstreams.

Tests compute expected costs from these rules, so they are part of the fakes'
contract:

* **Prompt tokens** = for every message 4 + the whitespace-separated words of its
  text (a string ``content`` or every ``text`` part) + 10 per image (an
  ``image_url``/``image`` part or an Ollama ``images`` entry; 40 per image when a
  DashScope request sets ``vl_high_resolution_images``).
* **Completion** = the sentence ``Hello from <model> on the fake <kind> upstream:
  <P> prompt tokens received.`` (or the ``reply`` knob); **completion tokens** = its
  words. A cap (``max_completion_tokens``, ``max_tokens``, Ollama
  ``options.num_predict``) keeps the first N words and finishes with ``length``.
  A stream sends one word per chunk.
* **Reasoning** (DashScope thinking) = ``Thinking about the request step by step.``
  (7 words), counted in completion tokens, not limited by the cap (as on DashScope).
* **Tool call** (when answered) = the chosen function with arguments
  ``{"fake": true}``; completion tokens = 10.
* **Embeddings**: prompt tokens = words of every input string (or the length of a
  token array); vectors are ``embedding_dims`` floats derived from a SHA-256 of the
  input, the same for the same text.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from typing import Any

FAKE_IMAGE_TOKENS = 10
FAKE_IMAGE_TOKENS_HIGH_RES = 40
REASONING_TEXT = "Thinking about the request step by step."
TOOL_CALL_TOKENS = 10
TOOL_ARGUMENTS = '{"fake": true}'
_IMAGE_PART_TYPES = frozenset({"image_url", "image", "input_image"})


def words(text: str) -> int:
    return len(text.split())


def count_prompt(messages: Iterable[Any], *, high_res: bool = False) -> tuple[int, int]:
    """(prompt tokens, images) of a chat request's messages (see module docstring)."""
    tokens = 0
    images = 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        tokens += 4
        content = message.get("content")
        if isinstance(content, str):
            tokens += words(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, Mapping):
                    continue
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    tokens += words(part["text"])
                elif part.get("type") in _IMAGE_PART_TYPES:
                    images += 1
        extra = message.get("images")
        if isinstance(extra, list):
            images += len(extra)
    per_image = FAKE_IMAGE_TOKENS_HIGH_RES if high_res else FAKE_IMAGE_TOKENS
    return tokens + images * per_image, images


def last_user_text(messages: Iterable[Any]) -> str:
    """The text of the last user message (its string or its text parts, joined)."""
    text = ""
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = " ".join(
                str(p["text"])
                for p in content
                if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            )
    return text


def reply_words(kind: str, model: str, prompt_tokens: int, fixed: str | None) -> list[str]:
    text = fixed or (
        f"Hello from {model} on the fake {kind} upstream: {prompt_tokens} prompt tokens received."
    )
    return text.split()


def apply_cap(tokens: list[str], cap: int | None) -> tuple[list[str], str]:
    """The words to send and the finish reason under a completion-token cap."""
    if cap is not None and 0 <= cap < len(tokens):
        return tokens[:cap], "length"
    return tokens, "stop"


def stream_pieces(tokens: list[str]) -> list[str]:
    """One word per chunk, later words with their leading space (joined = the text)."""
    return [w if i == 0 else " " + w for i, w in enumerate(tokens)]


def completion_cap(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    options = body.get("options")
    if isinstance(options, Mapping):
        value = options.get("num_predict")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def embedding_inputs(value: Any) -> list[tuple[str | None, int]]:
    """(text or None, tokens) for every input of an embeddings request."""
    if isinstance(value, str):
        return [(value, words(value))]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [(None, len(value))]
        out: list[tuple[str | None, int]] = []
        for item in value:
            if isinstance(item, str):
                out.append((item, words(item)))
            elif isinstance(item, list):
                out.append((None, len(item)))
        return out
    return []


def embedding_vector(text: str | None, index: int, dims: int) -> list[float]:
    seed = (text if text is not None else f"#tokens{index}").encode()
    out: list[float] = []
    block = b""
    counter = 0
    while len(out) < dims:
        if len(block) < 4:
            block += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
            counter += 1
        (value,) = struct.unpack(">I", block[:4])
        block = block[4:]
        out.append(round(value / 2**31 - 1.0, 6))
    return out


def chosen_tool(body: Mapping[str, Any], enabled: bool) -> str | None:
    """The function a fake answer calls, or None for a text answer."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
    if not (enabled or choice == "required"):
        return None
    first = tools[0]
    if isinstance(first, Mapping):
        function = first.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
    return None
