"""The ``aegis.io/v1alpha1`` API: ``LLMRoute`` and ``LLMBudget`` types and their CRDs.

Spec and status models (pydantic), the shared names (:mod:`.naming`: group,
labels, annotations), the events the operator posts, and the generator that turns
the models into the CRD schemas in ``crds/`` (``python -m aegis.operator.api.crdgen``).
Pure: no Kubernetes client, no I/O.

The models load on first use: the injector reads only the names, and every
replica would otherwise pay for pydantic models it never builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import naming
from .events import Event, EventType
from .lazy import on_first_use

if TYPE_CHECKING:
    from .rollout import RolloutAnalysis, RolloutPlan
    from .specs import LLMBudgetSpec, LLMRouteSpec
    from .status import (
        ArmStatistics,
        Condition,
        LLMBudgetStatus,
        LLMRouteStatus,
        RouteRolloutStatus,
    )

_MODELS = {
    "ArmStatistics": "status",
    "Condition": "status",
    "LLMBudgetSpec": "specs",
    "LLMBudgetStatus": "status",
    "LLMRouteSpec": "specs",
    "LLMRouteStatus": "status",
    "RolloutAnalysis": "rollout",
    "RolloutPlan": "rollout",
    "RouteRolloutStatus": "status",
}

__all__ = [
    "ArmStatistics",
    "Condition",
    "Event",
    "EventType",
    "LLMBudgetSpec",
    "LLMBudgetStatus",
    "LLMRouteSpec",
    "LLMRouteStatus",
    "RolloutAnalysis",
    "RolloutPlan",
    "RouteRolloutStatus",
    "naming",
]


__getattr__ = on_first_use(__name__, _MODELS)
