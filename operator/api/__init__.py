"""The ``aegis.io/v1alpha1`` API: ``LLMRoute`` and ``LLMBudget`` types and their CRDs.

Spec and status models (pydantic), the shared names (group, labels, annotations),
and the generator that turns the models into the CRD schemas in ``crds/``. Pure:
no Kubernetes client, no I/O.
"""
