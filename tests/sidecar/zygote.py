"""A fork server for multi-process tests: import the sidecar once, fork many.

Starting ``aegis sidecar`` costs about two seconds of CPU in imports on this
machine, so sixteen fresh interpreters would eat the test's time budget. The
zygote imports everything once (no event loop running) and forks each child on
request; a child runs exactly what ``aegis sidecar --config …`` runs
(:func:`aegis.sidecar.commands.run_sidecar`) or a fake upstream, as its own
process with its own pid, sockets and database connections, and can be
SIGKILLed like any sidecar.

Protocol: one JSON object per line on stdin
``{"kind": "sidecar"|"dashscope"|"ollama"|"openai", "port": int, "config": path,
"env": {...}, "log": path}``; the zygote answers ``{"pid": int}`` per line on
stdout. Children are reaped automatically (SIGCHLD ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aegis.sidecar.fakes.__main__ as fakes_main
import aegis.sidecar.http.server  # noqa: F401  (imported for the children)
from aegis.sidecar.commands import run_sidecar

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: SIGTERM this child when the zygote exits, so that a test that fails
    half-way (and never stops its fleet) leaves no sidecar behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child(command: dict[str, Any]) -> int:
    _die_with_parent()
    log = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.environ.update(command.get("env", {}))
    asyncio.set_event_loop_policy(None)
    if command["kind"] == "sidecar":
        return run_sidecar(Path(command["config"]), port=command["port"], metrics_port=0)
    fakes_main.main(["--kind", command["kind"], "--port", str(command["port"])])
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(command)
            except BaseException:  # e.g. its port was taken: say so in its log
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
