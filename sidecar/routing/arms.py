"""The rollout arm of one request: stable or candidate policy.

Pure: the caller passes the random number used when a request has no sticky key.
"""

from __future__ import annotations

import hashlib

from ..contract import Arm, RolloutSpec


def choose_arm(
    rollout: RolloutSpec | None,
    sticky_key: str | None,
    fallback_random: float,
    *,
    route: str = "",
) -> Arm:
    """Stable or candidate policy for one request.

    With a key, a stable hash of ``route/salt/key`` puts the key in one of 10000
    buckets, so a user stays on one arm while the weight holds, and raising the
    weight only moves users from stable to candidate (the salt changes only with
    the candidate). Without a key, ``fallback_random`` in [0, 1)
    decides, which keeps this function pure.
    """
    if rollout is None or rollout.weight <= 0:
        return Arm.STABLE
    if rollout.weight >= 100:
        return Arm.CANDIDATE
    if sticky_key is None:
        return Arm.CANDIDATE if fallback_random * 100 < rollout.weight else Arm.STABLE
    digest = hashlib.blake2b(
        f"{route}/{rollout.salt}/{sticky_key}".encode(), digest_size=8
    ).digest()
    bucket = int.from_bytes(digest, "big") % 10_000
    return Arm.CANDIDATE if bucket < rollout.weight * 100 else Arm.STABLE
