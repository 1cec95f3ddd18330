"""Status conditions with Kubernetes semantics (``metav1.Condition``), and status patches.

``lastTransitionTime`` moves only when a condition's status changes, so a
reconcile that finds nothing new writes nothing; conditions of other types
(another controller's, e.g. the rollout controller's) are kept as they are.
Pure: no client, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a Literal; the status models (pydantic) stay out of the injector
    from ..api.status import ConditionStatus


@dataclass(frozen=True, slots=True)
class Wanted:
    """A condition as a reconcile computes it (time and generation are added on merge)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def timestamp(instant: datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes times."""
    return instant.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def merge(
    previous: Sequence[Mapping[str, Any]],
    wanted: Iterable[Wanted],
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """``previous`` with each wanted condition set; order: previous first, then new."""
    updates = {w.type: w for w in wanted}
    merged: list[dict[str, Any]] = []
    for old in previous:
        want = updates.pop(str(old.get("type")), None)
        merged.append(dict(old) if want is None else _entry(want, old, generation, now))
    merged.extend(_entry(w, None, generation, now) for w in updates.values())
    return merged


def _entry(
    want: Wanted, old: Mapping[str, Any] | None, generation: int, now: datetime
) -> dict[str, Any]:
    unchanged = old is not None and old.get("status") == want.status
    return {
        "type": want.type,
        "status": want.status,
        "reason": want.reason,
        "message": want.message[:32768],
        "lastTransitionTime": old["lastTransitionTime"]
        if unchanged and old is not None and "lastTransitionTime" in old
        else timestamp(now),
        "observedGeneration": generation,
    }


def status_fields(
    obj: Mapping[str, Any], fields: Mapping[str, Any], wanted: Iterable[Wanted], now: datetime
) -> tuple[dict[str, Any], bool]:
    """``fields`` with ``observedGeneration`` and the conditions merged into the object's,
    and whether its status differs from them."""
    status = obj.get("status") or {}
    generation = int(obj["metadata"].get("generation", 0))
    conditions = merge(status.get("conditions") or [], wanted, generation, now)
    new = {**fields, "observedGeneration": generation, "conditions": conditions}
    return new, any(status.get(key) != value for key, value in new.items())


def conditional_patch(obj: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """A status merge patch the API refuses (409) if the object changed since ``obj``."""
    return {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": status}
