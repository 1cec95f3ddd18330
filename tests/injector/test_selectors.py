"""LabelSelector semantics match the API server's (matchLabels AND matchExpressions)."""

from __future__ import annotations

from typing import Any

import pytest

from aegis.operator.injector.selectors import SelectorError, matches

LABELS = {"app": "rag-api", "tier": "web"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, False),  # no selector: only the aegis.io/route annotation selects
        ({}, True),  # empty selector: every pod
        ({"matchLabels": {"app": "rag-api"}}, True),
        ({"matchLabels": {"app": "rag-api", "tier": "db"}}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}, True),
        ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, True),
        (
            {
                "matchLabels": {"app": "rag-api"},
                "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}],
            },
            False,
        ),
    ],
)
def test_matches(selector: dict[str, Any] | None, expected: bool) -> None:
    assert matches(selector, LABELS) is expected


def test_invalid_selector_raises() -> None:
    with pytest.raises(SelectorError, match="unknown operator"):
        matches({"matchExpressions": [{"key": "a", "operator": "Near"}]}, LABELS)
    with pytest.raises(SelectorError, match="needs values"):
        matches({"matchExpressions": [{"key": "a", "operator": "In"}]}, LABELS)
