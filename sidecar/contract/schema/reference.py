"""The sidecar configuration reference, generated from the pydantic models.

``python -m aegis.sidecar.contract.schema.reference > docs/sidecar-config.md`` writes it; a test
checks the committed file is what the models produce, so the reference cannot
drift from the code.
"""

from __future__ import annotations

import sys
import types
import typing
from enum import Enum
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from . import SidecarConfig

HEADER = """# Sidecar configuration reference

Generated from the models in `sidecar/contract/schema/` by
`python -m aegis.sidecar.contract.schema.reference`; do not edit.
The operator renders an `LLMRoute` into this document (ConfigMap `aegis-route-<name>`,
key `config.yaml`); without a cluster you write it yourself and run
`aegis sidecar --config FILE`. Field names are camelCase; unknown fields are refused.
Numbers and booleans are written unquoted (the sidecar refuses `port: "8787"`, as the
API server refuses it in an `LLMRoute`); an amount of money may be quoted (`"12.50"`).
"""


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in get_args(annotation) if a is not type(None)]
        return " \\| ".join(names)
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"map {_type_name(key)} → {_type_name(value)}"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return ""
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see type"
    if isinstance(value, Enum):
        value = value.value
    return f"`{value!r}`" if value not in (None, [], {}) else "—"


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every model reachable from ``root``, in first-seen order."""
    seen: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for field in model.model_fields.values():
            for candidate in _inner_types(field.annotation):
                visit(candidate)

    visit(root)
    return seen


def _inner_types(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _inner_types(arg)]


def render() -> str:
    lines = [HEADER]
    for model in _models(SidecarConfig):
        lines.append(f"## {model.__name__}\n")
        doc = (model.__doc__ or "").strip().splitlines()
        if doc:
            lines.append(doc[0] + "\n")
        lines.append("| field | type | default | description |")
        lines.append("|---|---|---|---|")
        for name, field in model.model_fields.items():
            alias = field.alias or name
            description = (field.description or "").replace("|", "\\|")
            lines.append(
                f"| `{alias}` | {_type_name(field.annotation)} | {_default(field)} | "
                f"{description} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
