"""Request facts: everything the router needs to know about one request.

``build_facts`` validates the parsed JSON body and the ``X-Aegis-*`` headers in a
single walk over the messages that also counts the bytes for the prompt-token
bound; privacy (:func:`~.scan.assess`) reads every string of the body the client
sent. Anything malformed raises ``BadRequest``
(400) naming the header or body field, so no later stage has to defend itself
against odd shapes and the client never sees a 500 for its own mistake.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import field
from typing import Any, Literal, Protocol

from ..contract import Complexity, PrivacySpec, Quality
from ..errors import BadRequest
from ..values import valueclass
from .masking import Masking
from .pricing import (
    IMAGE_TOKENS,
    TOKENS_PER_EMBEDDING_INPUT,
    extras_bytes,
    image_tokens_for,
    json_len,
    token_bound,
    utf8_len,
)
from .scan import assess

HEADER_DATA_CLASS = "X-Aegis-Data-Class"
HEADER_QUALITY = "X-Aegis-Quality"
HEADER_COMPLEXITY = "X-Aegis-Complexity"
HEADER_BATCH_SIZE = "X-Aegis-Batch-Size"
HEADER_USER = "X-Aegis-User"
MAX_USER_CHARS = 256
MAX_BATCH_SIZE = 1_000_000
MAX_MODEL_CHARS = 256
MAX_CHOICES = 128
# A token cap beyond any model's window: larger values are refused, which also keeps
# the reservation's Decimal arithmetic within its context.
MAX_TOKENS = 2**31 - 1
DEFAULT_QUALITY = Quality.STANDARD
DEFAULT_COMPLEXITY = Complexity.MEDIUM

Kind = Literal["chat", "embeddings"]
_BATCH = re.compile(r"[0-9]{1,7}")
# Content parts we can see into; anything else (audio, files) could carry PII we
# cannot scan, so it is refused rather than forwarded blind.
_TEXT_PARTS = {"text": "text", "refusal": "refusal"}


class Headers(Protocol):
    """A request's headers; aiohttp's CIMultiDictProxy (case-insensitive) fits."""

    def get(self, key: str, /) -> str | None: ...


@valueclass
class RequestFacts:
    """The routing-relevant facts of one request (never its text)."""

    kind: Kind
    model: str  # as requested, stripped; "" when the body names none
    data_class: str  # effective: the header's (or the default), raised by detection
    header_class: str | None
    declared_class: str  # the header's class, or the default
    detected: frozenset[str]  # names of the detectors that found something
    quality: Quality
    complexity: Complexity
    batch_size: int
    user_key: str | None  # the rollout stickiness key (X-Aegis-User unless configured)
    stream: bool
    max_tokens: int | None  # the client's completion cap, if it set one
    choices: int  # "n": each choice can use max_tokens
    image_parts: int
    prompt_text_tokens: int  # prompt bound without images (see pricing)
    masking: Masking | None = field(default=None, repr=False, compare=False)
    """Detected values to mask before a cloud call (holds them: never log it)."""

    @property
    def has_images(self) -> bool:
        return self.image_parts > 0

    def prompt_tokens_bound(self, model: str | None = None) -> int:
        """Upper bound on prompt tokens when sent to ``model`` (image allowance per model)."""
        if not self.image_parts:
            return self.prompt_text_tokens
        per_image = IMAGE_TOKENS if model is None else image_tokens_for(model)
        return self.prompt_text_tokens + self.image_parts * per_image


def build_facts(
    kind: Kind,
    body: Any,
    headers: Headers | Mapping[str, str],
    privacy: PrivacySpec,
    *,
    sticky_header: str = HEADER_USER,
    original: Any = None,
) -> RequestFacts:
    """Validate a parsed ``/v1/chat/completions`` or ``/v1/embeddings`` body and its
    headers into ``RequestFacts``; raise ``BadRequest`` naming the bad field.

    ``original`` is the body as the client sent it when ``body`` is its translation
    from another API (Responses, Messages): detection reads every string of it."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_type")
    header_class = _data_class_header(headers, privacy)
    quality_value = _enum_header(headers, HEADER_QUALITY, Quality)
    quality = Quality(quality_value) if quality_value else DEFAULT_QUALITY
    complexity_value = _enum_header(headers, HEADER_COMPLEXITY, Complexity)
    complexity = Complexity(complexity_value) if complexity_value else DEFAULT_COMPLEXITY
    batch_size = _batch_header(headers)
    user = _header(headers, HEADER_USER)
    user_key = user if sticky_header.lower() == HEADER_USER.lower() else None
    if user_key is None:
        user_key = _header(headers, sticky_header)
    for name, value in ((HEADER_USER, user), (sticky_header, user_key)):
        if value is not None and len(value) > MAX_USER_CHARS:
            raise BadRequest(
                f"Header {name} is longer than {MAX_USER_CHARS} characters.",
                param=name,
                code="invalid_header",
            )
    model = body.get("model")
    if model is None:
        model = ""
    elif not isinstance(model, str) or len(model) > MAX_MODEL_CHARS:
        raise BadRequest(
            f"Invalid 'model': expected a string of at most {MAX_MODEL_CHARS} characters.",
            param="model",
            code="invalid_type",
        )

    if kind == "chat":
        text_bytes, messages, images = _walk_messages(body)
        text_bytes += extras_bytes(body)
        prompt_text = token_bound(text_bytes, messages, 0)
        stream = _optional_bool(body, "stream")
        choices = _optional_int(body, "n", minimum=1, maximum=MAX_CHOICES) or 1
        limits = [
            v
            for v in (
                _optional_int(body, "max_tokens", minimum=0, maximum=MAX_TOKENS),
                _optional_int(body, "max_completion_tokens", minimum=0, maximum=MAX_TOKENS),
            )
            if v is not None
        ]
        # Either field may be honoured upstream, so the larger one bounds the output.
        max_tokens = max(limits) if limits else None
    else:
        prompt_text = _walk_embedding_input(body)
        images, stream, choices, max_tokens = 0, False, 1, None

    decision = assess(body, original, header_class, privacy)
    return RequestFacts(
        kind=kind,
        model=model.strip(),
        data_class=decision.data_class,
        header_class=header_class,
        declared_class=decision.declared,
        detected=decision.detected,
        quality=quality,
        complexity=complexity,
        batch_size=batch_size,
        user_key=user_key,
        stream=stream,
        max_tokens=max_tokens,
        choices=choices,
        image_parts=images,
        prompt_text_tokens=prompt_text,
        masking=decision.masking,
    )


# ---------------------------------------------------------------- headers


def _header(headers: Headers | Mapping[str, str], name: str) -> str | None:
    """One header value, stripped; a repeated header is refused (which one counts?)."""
    value = headers.get(name)
    if value is None:
        return None  # absent, so not repeated either (the common case: one lookup)
    getall = getattr(headers, "getall", None)
    if getall is not None and len(getall(name)) > 1:
        raise BadRequest(
            f"Header {name} is given more than once.", param=name, code="invalid_header"
        )
    value = value.strip()
    if not value:
        raise BadRequest(f"Header {name} is empty.", param=name, code="invalid_header")
    return value


def _data_class_header(headers: Headers | Mapping[str, str], privacy: PrivacySpec) -> str | None:
    value = _header(headers, HEADER_DATA_CLASS)
    if value is None:
        return None
    value = value.lower()
    if value not in privacy.classes:
        raise BadRequest(
            f"Header {HEADER_DATA_CLASS}: unknown data class {value!r}; "
            f"expected one of: {', '.join(privacy.classes)}.",
            param=HEADER_DATA_CLASS,
            code="invalid_header",
        )
    return value


def _enum_header(
    headers: Headers | Mapping[str, str], name: str, allowed: type[Quality] | type[Complexity]
) -> str | None:
    value = _header(headers, name)
    if value is None:
        return None
    value = value.lower()
    choices = [member.value for member in allowed]
    if value not in choices:
        raise BadRequest(
            f"Header {name}: invalid value {value!r}; expected one of: {', '.join(choices)}.",
            param=name,
            code="invalid_header",
        )
    return value


def _batch_header(headers: Headers | Mapping[str, str]) -> int:
    value = _header(headers, HEADER_BATCH_SIZE)
    if value is None:
        return 1
    if _BATCH.fullmatch(value) is None or not 1 <= int(value) <= MAX_BATCH_SIZE:
        raise BadRequest(
            f"Header {HEADER_BATCH_SIZE}: expected an integer from 1 to {MAX_BATCH_SIZE}, "
            f"got {value[:32]!r}.",
            param=HEADER_BATCH_SIZE,
            code="invalid_header",
        )
    return int(value)


# ---------------------------------------------------------------- body


def _optional_bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(
            f"Invalid type for '{key}': expected a boolean.", param=key, code="invalid_type"
        )
    return value


def _optional_int(
    body: dict[str, Any], key: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    # bool is an int in Python but not in JSON Schema; 1.0 is not an integer either.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(
            f"Invalid type for '{key}': expected an integer.", param=key, code="invalid_type"
        )
    if value < minimum or (maximum is not None and value > maximum):
        if maximum is None or maximum == MAX_TOKENS:  # only a token cap's one side matters
            bound = f">= {minimum}" if value < minimum else f"<= {maximum}"
        else:
            bound = f"from {minimum} to {maximum}"
        raise BadRequest(
            f"Invalid value for '{key}': expected an integer {bound}, got {value}.",
            param=key,
            code="invalid_value",
        )
    return value


def _missing(param: str) -> BadRequest:
    """The error OpenAI answers for a required body field that is absent."""
    return BadRequest(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _walk_messages(body: dict[str, Any]) -> tuple[int, int, int]:
    """Validate ``messages``. Returns (text bytes, messages, images)."""
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise BadRequest(
            "Invalid type for 'messages': expected an array.", param="messages", code="invalid_type"
        )
    if not messages:
        raise BadRequest(
            "Invalid 'messages': empty array; expected at least one message.",
            param="messages",
            code="empty_array",
        )
    text_bytes = images = 0
    for i, message in enumerate(messages):
        # The field path is spelled out only for an error or a nested walk.
        if not isinstance(message, dict):
            where = f"messages[{i}]"
            raise BadRequest(
                f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type"
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise BadRequest(
                f"Invalid 'messages[{i}].role': expected a non-empty string.",
                param=f"messages[{i}].role",
                code="invalid_type" if role is not None else "missing_required_parameter",
            )
        content = message.get("content")
        if isinstance(content, str):
            text_bytes += utf8_len(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                added, image = _content_part(part, f"messages[{i}].content[{j}]")
                text_bytes += added
                images += image
        elif content is not None:
            raise BadRequest(
                f"Invalid type for 'messages[{i}].content': expected a string or an array of "
                "content parts.",
                param=f"messages[{i}].content",
                code="invalid_type",
            )
        for key in ("name", "tool_call_id"):
            value = message.get(key)
            if value is not None:
                if not isinstance(value, str):
                    raise BadRequest(
                        f"Invalid type for 'messages[{i}].{key}': expected a string.",
                        param=f"messages[{i}].{key}",
                        code="invalid_type",
                    )
                text_bytes += utf8_len(value)
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            text_bytes += _tool_calls(tool_calls, f"messages[{i}].tool_calls")
    return text_bytes, len(messages), images


def _content_part(part: Any, where: str) -> tuple[int, int]:
    """Validate one content part; returns (text bytes, image count)."""
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str):
        raise BadRequest(
            f"Invalid '{where}': expected an object with a string 'type'.",
            param=where,
            code="invalid_type",
        )
    if kind in _TEXT_PARTS:
        key = _TEXT_PARTS[kind]
        text = part.get(key)
        if not isinstance(text, str):
            raise BadRequest(
                f"Invalid type for '{where}.{key}': expected a string.",
                param=f"{where}.{key}",
                code="invalid_type",
            )
        return utf8_len(text), 0
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url:
            raise BadRequest(
                f"Invalid '{where}.image_url': expected an object with a string 'url'.",
                param=f"{where}.image_url",
                code="invalid_type",
            )
        return 0, 1
    raise BadRequest(
        f"Invalid '{where}.type': content part type {kind[:40]!r} is not supported; "
        "expected 'text' or 'image_url'.",
        param=f"{where}.type",
        code="invalid_value",
    )


def _tool_calls(tool_calls: Any, where: str) -> int:
    if not isinstance(tool_calls, list):
        raise BadRequest(
            f"Invalid type for '{where}': expected an array.", param=where, code="invalid_type"
        )
    for k, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if not isinstance(arguments, str):
            raise BadRequest(
                f"Invalid '{where}[{k}]': expected an object with 'function.arguments' "
                "as a string.",
                param=f"{where}[{k}]",
                code="invalid_type",
            )
    return json_len(tool_calls)


def _walk_embedding_input(body: dict[str, Any]) -> int:
    """Validate embeddings ``input``. Returns the prompt-token bound."""
    data = body.get("input")
    if data is None:
        raise _missing("input")
    if isinstance(data, str):
        return utf8_len(data) + TOKENS_PER_EMBEDDING_INPUT
    if not isinstance(data, list) or not data:
        raise BadRequest(
            "Invalid 'input': expected a string, an array of strings or an array of "
            "token arrays, and not empty.",
            param="input",
            code="invalid_type",
        )
    if all(isinstance(item, str) for item in data):
        return sum(utf8_len(item) + TOKENS_PER_EMBEDDING_INPUT for item in data)
    if all(_is_token(item) for item in data):
        return len(data) + TOKENS_PER_EMBEDDING_INPUT
    if all(isinstance(item, list) and all(_is_token(t) for t in item) for item in data):
        return sum(len(item) + TOKENS_PER_EMBEDDING_INPUT for item in data)
    raise BadRequest(
        "Invalid 'input': an array must hold only strings, only token ids, or only "
        "arrays of token ids.",
        param="input",
        code="invalid_type",
    )


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
