"""Running host commands for the cluster, with their output in the error when they fail."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

#: PATH for the cluster's servers and the tools they call (iptables, mount, CNI, runc).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ClusterError(RuntimeError):
    """The cluster could not be built, started or removed; the message says why."""


def run(
    argv: Sequence[str],
    *,
    input: str | bytes | None = None,
    check: bool = True,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`; raise ClusterError with its output when it fails and `check`."""
    data = input.encode() if isinstance(input, str) else input
    try:
        done = subprocess.run(
            list(argv), input=data, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError as error:
        raise ClusterError(f"{argv[0]}: not installed ({error})") from None
    except subprocess.TimeoutExpired:
        raise ClusterError(f"`{' '.join(argv)}` did not finish in {timeout:.0f}s") from None
    result = subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise ClusterError(f"`{' '.join(argv)}` exited with {result.returncode}:\n{output}")
    return result


def ok(argv: Sequence[str], timeout: float = 60.0) -> bool:
    """True when `argv` exits 0 (missing tools count as failure)."""
    try:
        return run(argv, check=False, timeout=timeout).returncode == 0
    except ClusterError:
        return False
