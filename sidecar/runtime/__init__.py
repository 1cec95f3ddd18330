"""The long-lived state of one sidecar process: config, adapters, budgets, ledger.

Built once at start-up from the config, swapped whole on a hot reload, so each
request reads one consistent snapshot.
"""
