"""Request facts: header and body validation (400 with a precise message, never a
crash), defaults, detection and the prompt bound."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from aegis.sidecar.contract import Complexity, PrivacySpec, Quality
from aegis.sidecar.errors import BadRequest
from aegis.sidecar.http.error_bodies import error_body
from aegis.sidecar.request import PiiKind
from aegis.sidecar.request.facts import RequestFacts, build_facts
from aegis.sidecar.request.pricing import IMAGE_TOKENS, image_tokens_for, prompt_token_bound

PRIVACY = PrivacySpec()


def chat_body(content: Any = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}


def facts(
    body: Any = None,
    headers: dict[str, str] | CIMultiDict[str] | None = None,
    *,
    kind: str = "chat",
    privacy: PrivacySpec = PRIVACY,
    sticky_header: str = "X-Aegis-User",
) -> RequestFacts:
    return build_facts(
        "chat" if kind == "chat" else "embeddings",
        chat_body() if body is None else body,
        CIMultiDict(headers or {}),
        privacy,
        sticky_header=sticky_header,
    )


def bad(body: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        facts(body, headers, **kw)
    return caught.value


# --------------------------------------------------------------- defaults and headers


def test_defaults_without_headers() -> None:
    f = facts()
    assert f.kind == "chat" and f.model == "auto"
    assert f.data_class == "internal" and f.header_class is None and f.detected == frozenset()
    assert f.quality is Quality.STANDARD and f.complexity is Complexity.MEDIUM
    assert f.batch_size == 1 and f.user_key is None
    assert f.stream is False and f.max_tokens is None and f.choices == 1
    assert f.image_parts == 0 and not f.has_images


def test_headers_are_read_case_insensitively_and_normalised() -> None:
    f = facts(
        headers={
            "x-aegis-data-class": " Public ",
            "X-AEGIS-QUALITY": "Critical",
            "x-aegis-complexity": "high",
            "X-Aegis-Batch-Size": "250",
            "X-Aegis-User": "alice",
        }
    )
    assert f.header_class == "public" and f.data_class == "public"
    assert f.quality is Quality.CRITICAL and f.complexity is Complexity.HIGH
    assert f.batch_size == 250 and f.user_key == "alice"


@pytest.mark.parametrize(
    ("header", "value", "needle"),
    [
        ("X-Aegis-Data-Class", "secret", "unknown data class 'secret'"),
        ("X-Aegis-Quality", "best", "expected one of: low, standard, high, critical"),
        ("X-Aegis-Complexity", "extreme", "expected one of: low, medium, high"),
        ("X-Aegis-Batch-Size", "0", "integer from 1 to 1000000"),
        ("X-Aegis-Batch-Size", "1000001", "integer from 1 to 1000000"),
        ("X-Aegis-Batch-Size", "12abc", "integer from 1 to 1000000"),
        ("X-Aegis-Batch-Size", "-3", "integer from 1 to 1000000"),
        ("X-Aegis-Batch-Size", "1e3", "integer from 1 to 1000000"),
        ("X-Aegis-User", "u" * 257, "longer than 256"),
        ("X-Aegis-Quality", "   ", "is empty"),
    ],
)
def test_bad_header_values_name_the_header(header: str, value: str, needle: str) -> None:
    error = bad(headers={header: value})
    assert error.status == 400 and error.param == header and error.code == "invalid_header"
    assert header in error.message and needle in error.message


def test_batch_size_bounds_are_inclusive() -> None:
    assert facts(headers={"X-Aegis-Batch-Size": "1"}).batch_size == 1
    assert facts(headers={"X-Aegis-Batch-Size": "1000000"}).batch_size == 1_000_000


def test_user_of_exactly_256_characters_is_accepted() -> None:
    assert facts(headers={"X-Aegis-User": "u" * 256}).user_key == "u" * 256


def test_repeated_data_class_header_is_refused() -> None:
    headers: CIMultiDict[str] = CIMultiDict()
    headers.add("X-Aegis-Data-Class", "public")
    headers.add("X-Aegis-Data-Class", "pii")
    error = bad(headers=headers)  # type: ignore[arg-type]
    assert error.param == "X-Aegis-Data-Class" and "more than once" in error.message


def test_custom_stickiness_header() -> None:
    f = facts(headers={"X-Tenant": "acme", "X-Aegis-User": "bob"}, sticky_header="X-Tenant")
    assert f.user_key == "acme"
    assert facts(headers={"X-Aegis-User": "bob"}, sticky_header="X-Tenant").user_key is None


def test_header_class_from_a_custom_class_list() -> None:
    spec = PrivacySpec(
        classes=["open", "restricted"], local_only=["restricted"], default_class="open",
        detected_class="restricted",
    )  # fmt: skip
    assert facts(headers={"X-Aegis-Data-Class": "restricted"}, privacy=spec).data_class == (
        "restricted"
    )
    assert (
        "expected one of: open, restricted"
        in bad(headers={"X-Aegis-Data-Class": "pii"}, privacy=spec).message
    )


# --------------------------------------------------------------- detection


def test_detected_pii_raises_the_class() -> None:
    f = facts(chat_body("reach me at jane@example.com"), {"X-Aegis-Data-Class": "public"})
    assert f.header_class == "public" and f.data_class == "pii"
    assert f.detected == {PiiKind.EMAIL}


def test_pii_in_any_message_part_or_tool_arguments_is_found() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "card 4111 1111 1111 1111"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {
                            "name": "lookup",
                            "arguments": '{"phone": "+44 20 7946 0958"}',
                        },
                    }
                ],
            },
        ]
    }
    assert facts(body).detected == {PiiKind.CARD, PiiKind.PHONE}


def test_pii_split_across_messages_is_found() -> None:
    # The model reads consecutive messages as one text: a number split between
    # them is still the number.
    body = {
        "messages": [
            {"role": "user", "content": "call 212-555"},
            {"role": "user", "content": "-0187 please"},
        ]
    }
    assert facts(body).detected == {PiiKind.PHONE}


def test_stricter_header_is_kept_and_not_scanned() -> None:
    f = facts(chat_body("jane@example.com"), {"X-Aegis-Data-Class": "hipaa"})
    assert f.data_class == "hipaa"
    assert f.detected == frozenset()  # scanning could not change anything


def test_detection_disabled() -> None:
    f = facts(chat_body("jane@example.com"), privacy=PrivacySpec(detect=False))
    assert f.data_class == "internal" and f.detected == frozenset()


def test_embedding_input_is_scanned() -> None:
    f = facts({"model": "auto", "input": ["fine", "IBAN DE89 3704 0044 0532 0130 00"]}, kind="emb")
    assert f.kind == "embeddings" and f.data_class == "pii" and f.detected == {PiiKind.IBAN}


# --------------------------------------------------------------- body shape


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ([], None, "JSON object"),
        ({"model": "auto"}, "messages", "Missing required parameter: 'messages'"),
        ({"messages": "hi"}, "messages", "expected an array"),
        ({"messages": []}, "messages", "empty array"),
        ({"messages": ["hi"]}, "messages[0]", "expected an object"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role", "non-empty string"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string or an"),
        (
            {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages[0].content[0]",
            "string 'type'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages[0].content[0].text",
            "expected a string",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].image_url",
            "string 'url'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type",
            "'input_audio' is not supported",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": {"id": 1}}]},
            "messages[0].tool_calls",
            "expected an array",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]},
            "messages[0].tool_calls[0]",
            "function.arguments",
        ),
        ({"messages": [{"role": "tool", "content": "x", "name": 3}]}, "messages[0].name", ""),
        (chat_body(model=7), "model", "expected a string"),
        (chat_body(model="m" * 257), "model", "at most 256"),
        (chat_body(stream="yes"), "stream", "expected a boolean"),
        (chat_body(max_tokens=-1), "max_tokens", "expected an integer >= 0, got -1"),
        (chat_body(max_tokens=True), "max_tokens", "expected an integer"),
        (chat_body(max_tokens=10.5), "max_tokens", "expected an integer"),
        (chat_body(max_completion_tokens="9"), "max_completion_tokens", "expected an integer"),
        (chat_body(n=0), "n", "from 1 to 128"),
    ],
)
def test_bad_chat_bodies_name_the_field(body: Any, param: str | None, needle: str) -> None:
    error = bad(body)
    assert error.status == 400 and error.param == param
    assert needle in error.message
    assert error_body(error) == {
        "error": {
            "message": error.message,
            "type": "invalid_request_error",
            "param": param,
            "code": error.code,
        }
    }


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (None, "Missing required parameter: 'input'"),
        ([], "not empty"),
        (5, "expected a string"),
        (["a", 1], "only strings"),
        ([[1, "a"]], "only strings"),
        ([True], "only strings"),
    ],
)
def test_bad_embedding_inputs(data: Any, needle: str) -> None:
    body = {"model": "auto"} if data is None else {"model": "auto", "input": data}
    error = bad(body, kind="embeddings")
    assert error.param == "input" and needle in error.message


def test_valid_shapes_are_accepted() -> None:
    body = {
        "model": " openai/gpt-4o ",
        "stream": True,
        "n": 2,
        "max_tokens": 0,
        "max_completion_tokens": 300,
        "messages": [
            {"role": "developer", "content": "be brief", "name": "ops"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
                    {"type": "image_url", "image_url": "https://x/b.png"},
                ],
            },
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "assistant", "content": None, "tool_calls": []},
        ],
    }
    f = facts(body)
    assert f.model == "openai/gpt-4o" and f.stream is True and f.choices == 2
    assert f.max_tokens == 300  # either field may be honoured: the larger bounds the output
    assert f.image_parts == 2 and f.has_images


def test_null_optional_fields_are_ignored() -> None:
    f = facts(chat_body(stream=None, max_tokens=None, n=None, model=None))
    assert f.model == "" and f.stream is False and f.max_tokens is None and f.choices == 1


def test_embedding_shapes() -> None:
    for data in ("text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        f = facts({"model": "auto", "input": data, "stream": True, "max_tokens": 5}, kind="emb")
        assert f.kind == "embeddings" and f.stream is False and f.max_tokens is None


# --------------------------------------------------------------- the prompt bound


@pytest.mark.parametrize(
    "body",
    [
        chat_body("héllo wörld " * 20),
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"}, {
                    "type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "1", "content": "ok"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        },
    ],
)  # fmt: skip
def test_facts_bound_equals_the_pricing_bound(body: dict[str, Any]) -> None:
    f = facts(body)
    assert f.prompt_tokens_bound() == prompt_token_bound(body)
    assert f.prompt_tokens_bound("gpt-4o-mini") == f.prompt_text_tokens + f.image_parts * (
        image_tokens_for("gpt-4o-mini")
    )


def test_embedding_bound_equals_the_pricing_bound() -> None:
    for data in ("text", ["a", "bü"], [1, 2, 3], [[1, 2], [3]]):
        body = {"input": data}
        assert facts(body, kind="emb").prompt_tokens_bound() == prompt_token_bound(body)


def test_image_allowance_is_per_image() -> None:
    one = facts(chat_body([{"type": "image_url", "image_url": {"url": "u"}}]))
    two = facts(chat_body([{"type": "image_url", "image_url": {"url": "u"}}] * 2))
    assert two.prompt_tokens_bound() - one.prompt_tokens_bound() == IMAGE_TOKENS
