"""Kubernetes ``LabelSelector`` matching, exactly as the API server defines it.

An ``LLMRoute`` picks its pods with ``spec.podSelector``; the injector evaluates it
against a pod's labels at admission time, so this must agree with Kubernetes:
all ``matchLabels`` and all ``matchExpressions`` must hold (AND), an empty selector
``{}`` matches every pod, and an absent selector (``None``) matches none (a route
without a selector is only used through the ``aegis.io/route`` annotation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SelectorError(ValueError):
    """A selector the API server would not have accepted (unknown operator, bad values)."""


def _requirement_holds(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = requirement.get("key")
    operator = requirement.get("operator")
    values = requirement.get("values") or []
    if not isinstance(key, str) or not key:
        raise SelectorError("matchExpressions: key is required")
    if operator == "In":
        if not values:
            raise SelectorError(f"matchExpressions[{key}]: operator In needs values")
        return key in labels and labels[key] in values
    if operator == "NotIn":
        if not values:
            raise SelectorError(f"matchExpressions[{key}]: operator NotIn needs values")
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise SelectorError(f"matchExpressions[{key}]: unknown operator {operator!r}")


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """True when ``labels`` satisfy ``selector`` (``None`` selects nothing, ``{}`` all)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(
        _requirement_holds(requirement, labels)
        for requirement in selector.get("matchExpressions") or []
    )
