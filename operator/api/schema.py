"""pydantic JSON Schema → Kubernetes structural OpenAPI v3 schema.

pydantic speaks JSON Schema 2020-12; a CRD wants the structural subset of
OpenAPI v3: every node typed, no ``$ref``, no ``anyOf`` of types, no ``title``,
``exclusiveMinimum`` as a boolean beside ``minimum``. This module does that
translation and nothing else, applying on the way the additions that only a
CRD has: descriptions for fields the sidecar left undocumented, CEL rules for
sidecar models, list semantics for server-side apply and uniqueness.

List semantics, by convention: a list of objects with a required ``name`` is a
map keyed by name (unique names, merged by name under server-side apply); a
list of scalars is a set (unique items), except for lists whose order carries
meaning (:data:`ORDERED_LISTS`), which stay atomic and check uniqueness in CEL
where it matters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel

from .extras import DESCRIPTIONS, SIDECAR_SCHEMA_EXTRAS

Schema = dict[str, Any]

#: Scalar lists whose order matters (fallback chain, vision models, rollout steps).
ORDERED_LISTS = frozenset({"fallback", "vision", "steps"})
_KEY_ORDER = (
    "rule",
    "message",
    "fieldPath",
    "description",
    "type",
    "format",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "items",
)


class SchemaError(ValueError):
    """A model uses a construct that has no structural-schema equivalent."""


def reachable_models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every model class reachable from ``root`` through field annotations."""
    seen: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                return
            seen.append(annotation)
            for field in annotation.model_fields.values():
                visit(field.annotation)
            return
        for arg in get_args(annotation):
            visit(arg)

    visit(root)
    return seen


def _rst_to_text(text: str) -> str:
    """Docstrings use ``literal``; kubectl explain shows plain text."""
    return re.sub(r"\s+", " ", text.replace("``", "`")).strip()


def _format_default(value: Any) -> str | None:
    if value is None or value in ("", [], {}):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return None  # an object default is described by its own fields
    return str(value)


def _description_for(owner: type[BaseModel] | None, prop: str) -> str | None:
    if owner is None:
        return None
    for cls in owner.__mro__:
        text = DESCRIPTIONS.get(cls, {}).get(prop)
        if text:
            return text
    return None


def _factory_defaults(owner: type[BaseModel] | None) -> dict[str, Any]:
    """Defaults made by ``default_factory`` (pydantic leaves them out of the schema)."""
    if owner is None:
        return {}
    found = {}
    for name, field in owner.model_fields.items():
        factory = field.default_factory
        if factory is None or field.default_factory_takes_validated_data:
            continue
        value = factory()  # type: ignore[call-arg]
        if isinstance(value, list | str | int | float):
            found[field.alias or name] = value
    return found


class _Converter:
    def __init__(
        self, root: type[BaseModel], defs: Mapping[str, Schema], *, defaults: bool
    ) -> None:
        self.defs = defs
        self.defaults = defaults
        self.classes = {cls.__name__: cls for cls in reachable_models(root)}

    def node(self, raw: Schema, owner: type[BaseModel] | None = None) -> Schema:
        """Convert one schema node; ``owner`` is the model class the node describes."""
        raw = dict(raw)
        if "$ref" in raw:
            name = raw.pop("$ref").rsplit("/", 1)[1]
            target = self.node(self.defs[name], self.classes.get(name))
            merged = {**target, **{k: v for k, v in self.node_meta(raw).items() if v}}
            return merged
        if "anyOf" in raw:
            options = [o for o in raw.pop("anyOf") if o.get("type") != "null"]
            numeric = [o for o in options if o.get("type") == "number"]
            if len(options) == 2 and {o.get("type") for o in options} == {"number", "string"}:
                options = numeric  # Decimal: JSON numbers in the CRD, exact in Python
            if len(options) != 1:
                raise SchemaError(f"no structural equivalent for anyOf {options}")
            inner = self.node(options[0], owner)
            return {**inner, **{k: v for k, v in self.node_meta(raw).items() if v}}
        out: Schema = self.node_meta(raw)
        if "const" in raw:
            out["enum"] = [raw["const"]]
        for key in (
            "type",
            "format",
            "enum",
            "pattern",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "minProperties",
            "maxProperties",
            "minimum",
            "maximum",
        ):
            if key in raw:
                out[key] = raw[key]
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if bound in raw:
                out[plain] = raw[bound]
                out[bound] = True
        if out.get("type") == "object" or "properties" in raw:
            self.object(raw, out, owner)
        if out.get("type") == "array":
            out["items"] = self.node(raw["items"])
        for key, value in raw.items():
            if key == "x-kubernetes-validations" and key in out:
                # the model's own rules, then those added for a sidecar class it extends
                out[key] = [*value, *(rule for rule in out[key] if rule not in value)]
            elif key.startswith("x-kubernetes-"):
                out[key] = value
        return out

    def node_meta(self, raw: Schema) -> Schema:
        description = raw.get("description")
        text = _rst_to_text(description) if description else ""
        default = _format_default(raw.get("default")) if self.defaults else None
        if default is not None and "Default" not in text:
            text = f"{text} Default: {default}.".strip()
        return {"description": text} if text else {}

    def object(self, raw: Schema, out: Schema, owner: type[BaseModel] | None) -> None:
        out["type"] = "object"
        properties = raw.get("properties", {})
        if properties:
            converted: Schema = {}
            factories = _factory_defaults(owner)
            for name, raw_prop in properties.items():
                prop = {**raw_prop, "default": factories[name]} if name in factories else raw_prop
                schema = self.node(prop)
                overlay = _description_for(owner, name)
                if overlay:
                    default = _format_default(prop.get("default")) if self.defaults else None
                    suffix = f" Default: {default}." if default is not None else ""
                    schema["description"] = overlay + suffix
                if schema.get("type") == "array":
                    self.list_type(name, schema)
                converted[name] = schema
            out["properties"] = converted
            if raw.get("required"):
                out["required"] = list(raw["required"])
        extra = raw.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = self.node(extra)
        if owner is not None and not properties and not isinstance(extra, dict):
            raise SchemaError(f"{owner.__name__}: an object without properties")
        if owner is not None:
            for cls in owner.__mro__:
                apply = SIDECAR_SCHEMA_EXTRAS.get(cls)
                if apply is not None:
                    apply(out)
                    break

    @staticmethod
    def list_type(name: str, schema: Schema) -> None:
        if "x-kubernetes-list-type" in schema:
            return
        items = schema["items"]
        if items.get("type") == "object":
            if "name" in items.get("required", []):
                schema["x-kubernetes-list-type"] = "map"
                schema["x-kubernetes-list-map-keys"] = ["name"]
            else:
                schema["x-kubernetes-list-type"] = "atomic"
        elif name in ORDERED_LISTS:
            schema["x-kubernetes-list-type"] = "atomic"
        else:
            schema["x-kubernetes-list-type"] = "set"


def _ordered(schema: Any) -> Any:
    """Keys in a reading order (description first), recursively; stable output."""
    if isinstance(schema, list):
        return [_ordered(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    keys = [k for k in _KEY_ORDER if k in schema] + sorted(k for k in schema if k not in _KEY_ORDER)
    out = {}
    for key in keys:
        value = schema[key]
        if key == "properties":
            out[key] = {name: _ordered(prop) for name, prop in value.items()}
        else:
            out[key] = _ordered(value)
    return out


def structural_schema(model: type[BaseModel], *, defaults: bool = True) -> Schema:
    """The structural OpenAPI v3 schema of ``model`` (camelCase, as on the wire).

    ``defaults``: mention each field's default in its description (for specs; a
    status has no defaults worth telling)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    converter = _Converter(model, defs, defaults=defaults)
    result: Schema = _ordered(converter.node(raw, model))
    return result
