"""The schema models' base: camelCase aliases, unknown fields refused, the shared
checks run; and the constrained scalars (names, data classes, money)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ..behaviour import Checked
from ..money import MONEY_PRECISION, MONEY_SCALE

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="A DNS-label style name: lower case letters, digits and '-'.",
    ),
]
DataClass = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="A data classification label such as public, internal, pii or hipaa.",
    ),
]
Money = Annotated[
    Decimal, Field(ge=Decimal(0), max_digits=MONEY_PRECISION, decimal_places=MONEY_SCALE)
]


class Model(Checked, BaseModel):
    """Base for every schema model: camelCase aliases, unknown fields refused, and
    the type's ``check`` (``behaviour.py``) run once its fields are valid."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    @model_validator(mode="after")
    def _checked(self) -> Self:
        self.check()
        return self
