"""The committed config reference is what the models generate (no drift)."""

from __future__ import annotations

from pathlib import Path

from aegis.sidecar.contract.schema import SidecarConfig
from aegis.sidecar.contract.schema.reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "sidecar-config.md"


def test_committed_reference_matches_the_models() -> None:
    assert DOC.read_text() == render(), (
        "docs/sidecar-config.md is stale: run "
        "`.venv/bin/python -m aegis.sidecar.contract.schema.reference > docs/sidecar-config.md`"
    )


def test_every_top_level_field_is_documented() -> None:
    text = render()
    for name, field in SidecarConfig.model_fields.items():
        assert f"| `{field.alias or name}` |" in text
