"""The kinds Aegis reads and writes, as the client names them.

``LLMRoute``, ``LLMBudget`` and ``ClusterLLMBudget`` are generic resources (bodies stay plain dicts,
as kopf hands them over); the built-in kinds come with the library's models.
"""

from __future__ import annotations

from lightkube.core.resource import GlobalResource, NamespacedResource
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.core_v1 import ConfigMap, Secret

from ..api import naming

#: A kind the client accepts: one of the classes below.
Kind = type[NamespacedResource] | type[GlobalResource]

LLMRoute = create_namespaced_resource(
    naming.GROUP, naming.VERSION, naming.ROUTE_KIND, naming.ROUTE_PLURAL
)
LLMBudget = create_namespaced_resource(
    naming.GROUP, naming.VERSION, naming.BUDGET_KIND, naming.BUDGET_PLURAL
)
ClusterLLMBudget = create_global_resource(
    naming.GROUP, naming.VERSION, naming.CLUSTER_BUDGET_KIND, naming.CLUSTER_BUDGET_PLURAL
)

__all__ = [
    "ClusterLLMBudget",
    "ConfigMap",
    "Kind",
    "LLMBudget",
    "LLMRoute",
    "MutatingWebhookConfiguration",
    "Secret",
]
