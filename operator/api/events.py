"""The Kubernetes events the operator posts about LLMRoutes and LLMBudgets.

Their reasons are part of what users read (``kubectl get events``); the pure
planners return events in this shape and the controllers post them.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

EventType = Literal["Normal", "Warning"]


class Event(NamedTuple):
    """One event about an object: ``Normal`` or ``Warning``, a CamelCase reason, a message."""

    type: EventType
    reason: str
    message: str
