"""Aegis sidecar: the OpenAI-compatible proxy that routes each LLM call.

Packages, from the bottom up: ``contract`` (the config document, money, periods:
what the operator renders), ``errors`` and ``logs`` beside it; ``request`` (facts,
privacy, pricing); ``routing`` (the pure router), ``budgets``, ``adapters``,
``ledger``, ``metrics``; ``runtime`` (one process's state and hot reload);
``exchange`` (one request's effects); ``http`` (the API); ``commands`` and
``demo`` on top; ``fakes`` are fake providers for tests and the demo. The
operator imports the contract and the ledger; this package never imports the
operator.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
