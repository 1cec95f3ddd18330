"""Kubernetes events about our objects, posted by kopf's background poster.

kopf queues them and posts them (with retries) outside the handler, so a slow
API never delays a reconcile; they carry ``reportingComponent: aegis-operator``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

import kopf

EventType = Literal["Normal", "Warning"]
#: ``(type, reason, message)`` of one event, as the pure planners return them.
Event = tuple[EventType, str, str]


def post(obj: Mapping[str, Any], kind: EventType, reason: str, message: str) -> None:
    """Queue an event about ``obj`` (an object as read from the API)."""
    kopf.event(kopf.Body(cast(kopf.RawBody, obj)), type=kind, reason=reason, message=message)
