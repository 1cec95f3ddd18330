"""Checks of body fields for the translated APIs, each failing with a 400 that
names the field (``input[2].content`` for Responses, ``messages.0.content`` for
Messages: each API's own way of writing a path)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import BadRequest


def invalid(where: str, expected: str, *, code: str = "invalid_type") -> BadRequest:
    return BadRequest(f"Invalid '{where}': expected {expected}.", param=where, code=code)


def missing(where: str) -> BadRequest:
    return BadRequest(
        f"Missing required parameter: '{where}'.", param=where, code="missing_required_parameter"
    )


def unsupported(where: str, what: str) -> BadRequest:
    """A valid request the sidecar cannot serve (a hosted tool, server-side state)."""
    return BadRequest(f"Unsupported '{where}': {what}.", param=where, code="unsupported_parameter")


def unknown_keys(body: Mapping[str, Any], known: frozenset[str], prefix: str = "") -> None:
    """Refuse body fields the sidecar does not know rather than drop them unseen."""
    for key in body:
        if key not in known:
            raise BadRequest(
                f"Unknown parameter: '{prefix}{key}'.",
                param=f"{prefix}{key}",
                code="unknown_parameter",
            )


def as_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(where, "an object")
    return value


def as_list(value: Any, where: str, *, empty: bool = True) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(where, "an array")
    if not empty and not value:
        raise invalid(where, "a non-empty array", code="empty_array")
    return value


def as_str(value: Any, where: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise invalid(where, "a string" if empty else "a non-empty string")
    return value


def optional_str(body: Mapping[str, Any], key: str, where: str) -> str | None:
    value = body.get(key)
    return None if value is None else as_str(value, where)


def optional_bool(body: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise invalid(where, "a boolean")
    return value


def optional_number(body: Mapping[str, Any], key: str, where: str) -> float | int | None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise invalid(where, "a number")
    return value


def optional_int(
    body: Mapping[str, Any], key: str, where: str, *, minimum: int, maximum: int = 2**31 - 1
) -> int | None:
    """An integer field within [minimum, maximum] (the default bound is beyond any
    token window or count an API takes)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(where, "an integer")
    if not minimum <= value <= maximum:
        bound = f">= {minimum}" if value < minimum else f"<= {maximum}"
        raise invalid(where, f"an integer {bound}, got {value}", code="invalid_value")
    return value


def string_list(value: Any, where: str) -> list[str]:
    items = as_list(value, where)
    for i, item in enumerate(items):
        as_str(item, f"{where}[{i}]")
    return items


def put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` only when there is a value (absent stays absent upstream)."""
    if value is not None:
        target[key] = value
