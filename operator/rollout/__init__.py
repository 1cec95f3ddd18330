"""Progressive rollouts, the pure part: the recorded state and the analysis.

Ledger figures + plan + state + now -> the next state (:mod:`.analysis`), and the
state the reconciler keeps in line with the spec, with the event announcing each
move (:mod:`.state`). No I/O, no clock: the controller that reads the ledger and
writes the result lives in :mod:`aegis.operator.controllers.rollout`.
"""

from .analysis import (
    ArmStats,
    Breach,
    RolloutVerdict,
    analysis_due,
    breaches,
    duration_seconds,
    judge_step,
    ledger_unavailable,
    promote_now,
)
from .state import candidate_hash, fresh_state, recorded_state, rollout_state, transition_event

__all__ = [
    "ArmStats",
    "Breach",
    "RolloutVerdict",
    "analysis_due",
    "breaches",
    "candidate_hash",
    "duration_seconds",
    "fresh_state",
    "judge_step",
    "ledger_unavailable",
    "promote_now",
    "recorded_state",
    "rollout_state",
    "transition_event",
]
