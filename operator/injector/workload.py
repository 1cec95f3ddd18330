"""The workload a pod belongs to, read from the pod at admission (a pure function).

The sidecar records it on every ledger row (``AEGIS_WORKLOAD``), so that spend can be
reported per Deployment, StatefulSet, CronJob… rather than per pod. Only the pod in the
admission request is read: no API call, no RBAC beyond what the webhook has.

- A pod of a ReplicaSet that carries the ``pod-template-hash`` label is a
  Deployment's: the ReplicaSet is named ``<deployment>-<hash>``, so the Deployment is
  ``Deployment/<deployment>``. A ReplicaSet without it (made by hand, or whose name
  does not end in the hash) stays ``ReplicaSet/<name>``.
- StatefulSet, DaemonSet, ReplicationController and any other controller:
  ``<Kind>/<name>`` of the controlling owner reference.
- A Job named ``<cronjob>-<minutes>``, where the suffix is the scheduled time in
  minutes since the epoch (the CronJob controller's naming: 8 digits since 1989, 9
  from 2160), is ``CronJob/<cronjob>``: every run of a CronJob then reports under one
  name. The Job's owner is not read (that would cost an API call per admission); a Job
  named like that by hand is attributed to a CronJob of its prefix's name. Any other Job
  is ``Job/<name>``.
- A pod without an owner: ``Pod/<name>``, or ``Pod/<generateName>`` when the API
  server has not named it yet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The variables the sidecar reads (aegis.sidecar.runtime.process reads the same names).
WORKLOAD_ENV = "AEGIS_WORKLOAD"
SERVICE_ACCOUNT_ENV = "AEGIS_SERVICE_ACCOUNT"

TEMPLATE_HASH_LABEL = "pod-template-hash"
_CRONJOB_RUN = re.compile(r"^(?P<cronjob>.+)-(?P<minutes>[1-9][0-9]{7,8})$")


def controller_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference marked ``controller: true``, else the first one, else None."""
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    owners: list[Mapping[str, Any]] = [o for o in refs if isinstance(o, Mapping)]
    for owner in owners:
        if owner.get("controller"):
            return owner
    return owners[0] if owners else None


def workload_of(pod: Mapping[str, Any]) -> str:
    """``Kind/name`` of the workload that owns ``pod`` (see the module docstring)."""
    meta = pod.get("metadata") or {}
    owner = controller_of(pod)
    if owner is None or not owner.get("kind") or not owner.get("name"):
        return f"Pod/{meta.get('name') or meta.get('generateName') or 'unnamed'}"
    kind, name = str(owner["kind"]), str(owner["name"])
    if kind == "ReplicaSet":
        template_hash = (meta.get("labels") or {}).get(TEMPLATE_HASH_LABEL)
        suffix = f"-{template_hash}"
        if template_hash and name.endswith(suffix) and len(name) > len(suffix):
            return f"Deployment/{name.removesuffix(suffix)}"
    if kind == "Job":
        run = _CRONJOB_RUN.match(name)
        if run is not None:
            return f"CronJob/{run['cronjob']}"
    return f"{kind}/{name}"
