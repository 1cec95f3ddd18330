"""The Aegis sidecar injector: a mutating admission webhook for pods (``aegis injector``).

Why a standalone server and not kopf's ``@kopf.on.mutate`` inside the operator: pod
creation of every opted-in workload depends on this webhook (``failurePolicy: Fail``),
so it must run with two or more replicas behind a Service, while the operator runs
as a single replica (kopf peering). Tying admission to the operator process would
make an operator restart or rollout block pod creation cluster-wide.

Layout (decisions are pure functions, I/O sits at the edges):

- :mod:`.settings`  flags/env → frozen settings (what Helm values feed)
- :mod:`.selectors` Kubernetes LabelSelector matching
- :mod:`.routes`    LLMRoute objects → :class:`RouteInfo`; which route a pod uses
- :mod:`.patch`     the sidecar container, volumes and env as JSONPatch operations
- :mod:`.decide`    one AdmissionReview request → injected / skipped / refused
- :mod:`.review`    the AdmissionReview v1 wire format
- :mod:`.certs`     CA and serving certificates (``cryptography``), rotation plan
- :mod:`.manifests` MutatingWebhookConfiguration and RBAC as renderable objects
- :mod:`.cache`     informer-style LLMRoute cache (list + watch), no API call per review
- :mod:`.tls`       serving-certificate sources: a shared Secret, or files (cert-manager)
- :mod:`.server`    the aiohttp application, metrics and the run loop
- :mod:`.probe`     ``aegis probe``: the sidecar's exec health check
"""
