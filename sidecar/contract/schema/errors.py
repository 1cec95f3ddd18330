"""A pydantic validation error as one line that names each field as written in YAML."""

from __future__ import annotations

from pydantic import ValidationError


def format_validation_error(error: ValidationError) -> str:
    """One ``path: message`` per problem, joined by ``; ``."""
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "(document)"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)
