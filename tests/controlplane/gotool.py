"""The Go toolchain the test bed builds with: where it is, and the build environment."""

from __future__ import annotations

import os
import shutil


def find_go() -> str | None:
    """``$AEGIS_GO``, else ``go`` on the PATH, else Go's default install; None when
    none of them is an executable."""
    go = os.environ.get("AEGIS_GO") or shutil.which("go") or "/usr/local/go/bin/go"
    return go if os.access(go, os.X_OK) else None


def go_env() -> dict[str, str]:
    """This process's environment for ``go``: static, reproducible binaries, and no
    ``go.work`` or stray ``GOFLAGS`` from the caller."""
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOWORK="off", GO111MODULE="on", GOFLAGS="-buildvcs=false")
    return env
