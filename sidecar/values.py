"""``@valueclass``: the records the request path builds, frozen for the type checker and
plain slotted dataclasses at run time.

A frozen dataclass's ``__init__`` sets every field through ``object.__setattr__``,
~85 ns a field against ~15 for a plain one: 2.2 us for a ledger row's 26 fields, a
few microseconds a request over the records each request builds (its facts, route,
candidates, upstream result, ledger row). Declared with
``dataclass_transform(frozen_default=True)``, a ``@valueclass`` class is frozen to mypy
(which runs on every change and refuses any assignment to its fields), so the run
time check is what is dropped, not the guarantee. Instances stay hashable and
compare by value as frozen ones do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")


@overload
def valueclass(cls: type[T], /) -> type[T]: ...


@overload
def valueclass(*, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def valueclass(cls: Any = None, /, *, kw_only: bool = False) -> Any:
    """``@valueclass`` or ``@valueclass(kw_only=True)`` on a class, as ``@dataclass(frozen=True,
    slots=True)`` would be (see the module docstring)."""

    def make(target: type[Any]) -> type[Any]:
        return dataclass(slots=True, unsafe_hash=True, kw_only=kw_only)(target)

    return make if cls is None else make(cls)
