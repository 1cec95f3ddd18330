"""The ``admission.k8s.io/v1`` AdmissionReview wire format, in and out.

Kept apart from the decision so the decision never sees wire details (base64
patches, uid echoing) and so malformed reviews are answered here with a 400.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from .admission import AdmissionDecision, PodRequest

API_VERSION = "admission.k8s.io/v1"


class BadReview(ValueError):
    """Not an AdmissionReview v1 request this webhook can answer."""


def parse(review: Any) -> tuple[str, PodRequest]:
    """``(uid, request)`` from a decoded AdmissionReview."""
    if not isinstance(review, Mapping) or review.get("kind") != "AdmissionReview":
        raise BadReview("expected an AdmissionReview object")
    if review.get("apiVersion") != API_VERSION:
        raise BadReview(f"expected apiVersion {API_VERSION}, got {review.get('apiVersion')!r}")
    request = review.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str):
        raise BadReview("AdmissionReview.request.uid is missing")
    pod = request.get("object") or {}
    if not isinstance(pod, Mapping):
        raise BadReview("AdmissionReview.request.object must be an object")
    kind = request.get("kind") or {}
    return request["uid"], PodRequest(
        namespace=str(request.get("namespace") or (pod.get("metadata") or {}).get("namespace")),
        operation=str(request.get("operation", "")),
        kind=str(kind.get("kind", "")) if kind.get("group", "") == "" else "",
        subresource=str(request.get("subResource") or ""),
        pod=pod,
    )


def response(uid: str, decision: AdmissionDecision) -> dict[str, Any]:
    """The AdmissionReview answer: a JSONPatch, a plain allow, or a refusal with message."""
    answer: dict[str, Any] = {"uid": uid, "allowed": decision.outcome != "refused"}
    if decision.outcome == "refused":
        answer["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": f"Aegis sidecar injection refused: {decision.message}",
        }
    elif decision.patch:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(json.dumps(decision.patch).encode()).decode()
    if decision.outcome == "injected" and decision.route:
        answer["auditAnnotations"] = {"route": decision.route}
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": answer}
