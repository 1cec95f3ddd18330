"""Progressive rollouts, the pure part: the recorded state and the analysis.

Ledger figures + plan + state + now -> the next state. The controller that reads
the ledger and writes the result lives in :mod:`aegis.operator.controllers`.
"""
