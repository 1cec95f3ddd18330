"""Aegis sidecar: the OpenAI-compatible proxy that routes each LLM call.

The operator imports this package (config schema, ledger models); this package
never imports the operator.
"""

__version__ = "0.1.0"
