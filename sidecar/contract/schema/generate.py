"""Write the sidecar's runtime types (``contract/structs.py``) from the schema models.

``python -m aegis.sidecar.contract.schema.generate`` rewrites the file; a test checks
the committed one is what the models produce. Each schema model becomes a frozen
msgspec Struct of the same name: the same fields under the same wire names, the
same defaults and constraints (``msgspec.Meta``; money, which ``Meta`` cannot bound,
by ``check_money``), the same mixins from ``behaviour.py`` and so the same ``check``.
Descriptions stay in the schema: the sidecar never shows them.

The generator runs inside the ``contract`` package, which imports ``structs.py``: after
renaming or removing a mixin, first delete the stale class from ``structs.py`` (or the
mixin's name from its bases), then regenerate.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
import typing
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..money import MONEY_PRECISION, MONEY_SCALE
from .base import Model
from .config import SidecarConfig

TARGET = Path(__file__).resolve().parents[1] / "structs.py"
_CONSTRAINTS = ("min_length", "max_length", "ge", "gt", "le", "lt", "pattern")
MONEY = {"ge": 0, "max_digits": MONEY_PRECISION, "decimal_places": MONEY_SCALE}

HEADER = '''"""The config document's runtime types: what the sidecar decodes ``config.yaml`` into.

Generated from the schema models (``schema/``) by
``python -m aegis.sidecar.contract.schema.generate``; do not edit. msgspec Structs
instead of the pydantic models keep pydantic out of every sidecar process (about
10 MB of memory per pod); the shared mixins (``behaviour.py``) keep the rules one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta, field

from .behaviour import Checked, check_money
from .budget_key import BudgetScope
from .periods import PeriodKind
from .vocabulary import Complexity, Locality, OnExceeded, ProviderType, Quality
{mixins}

class Struct(Checked, msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of the runtime types: checked on construction as the schema checks."""

    # (attribute, wire name) of each money field: Meta cannot bound a Decimal.
    money_fields: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __post_init__(self) -> None:
        for attribute, wire in self.money_fields:
            try:
                check_money(getattr(self, attribute))
            except ValueError as exc:
                raise ValueError(f"{wire}: {exc}") from None
        self.check()
'''


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    """pydantic's constraint metadata (annotated-types' and its own) as one dict."""
    found: dict[str, Any] = {}
    for item in metadata:
        if dataclasses.is_dataclass(item):
            values = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
        else:
            values = dict(vars(item))
        found |= {k: v for k, v in values.items() if v is not None}
    return found


def _meta(metadata: list[Any]) -> str:
    """``Meta(...)`` for the constraints ("" when there are none)."""
    kwargs = _constraints(metadata)
    if unknown := set(kwargs) - set(_CONSTRAINTS):
        raise TypeError(f"no msgspec.Meta for the constraints {sorted(unknown)}")
    if not kwargs:
        return ""
    return "Meta(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def _type(annotation: Any, metadata: list[Any] | None = None) -> str:
    """The annotation as source, with ``metadata``'s constraints attached."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        # Constraints bind to the value, not to its absence.
        return " | ".join(
            "None" if a is type(None) else _type(a, metadata) for a in get_args(annotation)
        )
    if origin is typing.Annotated:
        inner, *extra = get_args(annotation)
        nested = [m for info in extra if isinstance(info, FieldInfo) for m in info.metadata]
        return _type(inner, [*nested, *(metadata or [])])
    if origin is list:
        text = f"list[{_type(get_args(annotation)[0])}]"
    elif origin is dict:
        key, value = get_args(annotation)
        text = f"dict[{_type(key)}, {_type(value)}]"
    elif origin is typing.Literal:
        text = "Literal[" + ", ".join(repr(a) for a in get_args(annotation)) + "]"
    elif annotation is Decimal:
        if _constraints(metadata or []) != MONEY:
            raise TypeError("a Decimal field must be Money (check_money bounds it)")
        return "Decimal"
    elif annotation in (str, int, float, bool) or issubclass(annotation, Model | Enum):
        text = annotation.__name__
    else:
        raise TypeError(f"no runtime type for {annotation!r}")
    meta = _meta(metadata or [])
    return f"Annotated[{text}, {meta}]" if meta else text


def _default(info: FieldInfo) -> dict[str, str]:
    """The field's default as ``msgspec.field`` arguments in source (none: required)."""
    factory = info.default_factory
    if factory is not None:
        if factory in (list, dict) or (isinstance(factory, type) and issubclass(factory, Model)):
            return {"default_factory": factory.__name__}
        return {"default_factory": f"lambda: {factory()!r}"}  # type: ignore[call-arg]
    if info.default is PydanticUndefined:
        return {}
    if isinstance(info.default, Enum):
        return {"default": f"{type(info.default).__name__}.{info.default.name}"}
    return {"default": repr(info.default)}


def _field(name: str, info: FieldInfo) -> str:
    if info.validation_alias not in (None, info.alias):
        raise TypeError(f"{name}: the runtime types know one wire name (alias) per field")
    annotation = _type(info.annotation, list(info.metadata))
    wire = info.alias or name
    arguments = ({"name": repr(wire)} if wire != name else {}) | _default(info)
    if not arguments:
        return f"    {name}: {annotation}"
    if list(arguments) == ["default"]:
        return f"    {name}: {annotation} = {arguments['default']}"
    call = ", ".join(f"{key}={value}" for key, value in arguments.items())
    return f"    {name}: {annotation} = field({call})"


def _models(root: type[Model]) -> list[type[Model]]:
    """Every model reachable from ``root``, each after its bases and field types."""
    ordered: list[type[Model]] = []

    def visit(tp: Any) -> None:
        for arg in get_args(tp):
            visit(arg)
        if isinstance(tp, FieldInfo):
            visit(tp.annotation)
        if not (isinstance(tp, type) and issubclass(tp, Model)) or tp is Model:
            return
        if tp in ordered:
            return
        for base in tp.__bases__:
            visit(base)
        for info in tp.model_fields.values():
            visit(info.annotation)
        ordered.append(tp)

    visit(root)
    return ordered


def _struct(model: type[Model]) -> str:
    validators = model.__pydantic_decorators__
    if validators.field_validators or set(validators.model_validators) != {"_checked"}:
        # The runtime types would not run it: a rule belongs in a mixin's check().
        raise TypeError(f"{model.__name__}: validators belong in behaviour.py, not the schema")
    parent = next(b for b in model.__mro__[1:] if issubclass(b, Model))
    own = {n: i for n, i in model.model_fields.items() if n not in parent.model_fields}
    base = "Struct" if parent is Model else parent.__name__
    bases = [*(b.__name__ for b in _mixins(model)), base]
    # kw_only is not inherited (it lets a required field follow defaulted ones);
    # frozen is, but type checkers want it said on each class.
    lines = [f"class {model.__name__}({', '.join(bases)}, frozen=True, kw_only=True):"]
    money = [(n, i.alias or n) for n, i in model.model_fields.items() if i.annotation is Decimal]
    if money:
        lines.append(f"    money_fields: ClassVar[tuple[tuple[str, str], ...]] = {tuple(money)!r}")
    lines += [_field(name, info) for name, info in own.items()]
    if len(lines) == 1:
        lines.append("    pass")
    return "\n".join(lines)


def _mixins(model: type[Model]) -> list[type]:
    """The model's own bases from ``behaviour.py`` and its like (not the schema's)."""
    return [b for b in model.__bases__ if not issubclass(b, Model)]


def render() -> str:
    """The module's source, its imports sorted and formatted as ruff leaves them."""
    models = _models(SidecarConfig)
    by_module: dict[str, list[str]] = {}
    for mixin in (m for model in models for m in _mixins(model)):
        by_module.setdefault(mixin.__module__.rsplit(".", 1)[-1], []).append(mixin.__name__)
    imports = "".join(
        f"from .{module} import {', '.join(sorted(names))}\n"
        for module, names in sorted(by_module.items())
    )
    source = HEADER.replace("{mixins}", imports)
    source += "".join(f"\n\n{_struct(m)}\n" for m in models)
    for command in (("check", "--fix", "--select", "I", "--quiet"), ("format",)):
        source = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(TARGET), "-"],
            input=source,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return source


def main() -> None:
    TARGET.write_text(render())
    sys.stdout.write(f"wrote {TARGET}\n")


if __name__ == "__main__":
    main()
