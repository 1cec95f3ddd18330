"""The one way Aegis talks to Kubernetes: client, errors, login, kinds, conditions.

Used by the operator's controllers, the rollout controller and the injector alike.
The client is built on ``lightkube`` rather than ``kubernetes_asyncio``; what we
need, and how the two compare for it:

- typed API: lightkube ships annotations (``py.typed``) that ``mypy --strict``
  checks; kubernetes_asyncio's generated methods are unannotated, so every call
  would need an ignore or a wrapper;
- weight, paid by every injector replica (two or more per cluster): importing
  lightkube and the kinds we use costs about 90 ms and 5-7 MiB of memory;
  kubernetes_asyncio imports every generated model: about 370 ms and 37 MiB
  (48 MB installed against 4 MB). The sync ``kubernetes`` package, which only
  loaded credentials before, cost 17 MiB and is gone;
- the injector's informer-style LLMRoute cache: both list with a resource
  version and watch from it; lightkube renews the watch itself and raises on a
  410 ``Gone``, so the cache only re-lists (it asks for no bookmarks: a quiet
  watch resumes from the last version it saw);
- the operator's verbs (get, list, create, merge and JSON patch, the ``status``
  subresource, delete) and custom resources as plain dicts: both; lightkube's
  generic resources keep LLMRoute and LLMBudget bodies as the dicts kopf hands
  over. lightkube has no ``DeleteOptions`` preconditions and no ``/version``:
  the client sends those two over the same connection pool;
- login: both load the in-cluster service account (re-reading the rotated
  token) and kubeconfigs with client certificates, tokens and exec plugins;
  :mod:`.config` hands the same credentials to kopf.

kopf keeps its own session (watching, finalizers, events); nothing else in the
code base makes API requests but :class:`KubeClient`.
"""

from .client import ALL_NAMESPACES, Body, KubeClient
from .conditions import Wanted, find, merge, timestamp
from .config import ConfigError, Credentials, credentials, load_config
from .errors import Conflict, Forbidden, Gone, Invalid, KubeError, NotFound, Transient
from .resources import (
    ClusterLLMBudget,
    ConfigMap,
    Kind,
    LLMBudget,
    LLMRoute,
    MutatingWebhookConfiguration,
    Secret,
)

__all__ = [
    "ALL_NAMESPACES",
    "Body",
    "ClusterLLMBudget",
    "ConfigError",
    "ConfigMap",
    "Conflict",
    "Credentials",
    "Forbidden",
    "Gone",
    "Invalid",
    "Kind",
    "KubeClient",
    "KubeError",
    "LLMBudget",
    "LLMRoute",
    "MutatingWebhookConfiguration",
    "NotFound",
    "Secret",
    "Transient",
    "Wanted",
    "credentials",
    "find",
    "load_config",
    "merge",
    "timestamp",
]
