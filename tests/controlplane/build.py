"""Build the test bed's Go binaries from the Go module proxy, once per pin set.

What is built is :mod:`.tools`: the API-only test bed needs kube-apiserver, kubectl,
etcd and helm (:data:`.tools.API_TOOLS`); the one-node cluster (``tests.cluster``) also
needs kubelet, kube-scheduler, kube-controller-manager, kube-proxy and CoreDNS
(:data:`.tools.NODE_TOOLS`).

Usage: ``python -m tests.controlplane.build [--node] [--force]``; fixtures call
:func:`ensure`.

Each tool is built from a small *wrapper module* generated under
``<cache>/<versions-key>/src/<tool>/`` rather than with ``go install pkg@version``,
because ``go install`` refuses modules whose go.mod has replace directives:

* ``k8s.io/kubernetes`` requires its 31 staging modules (``k8s.io/api``, ...) at
  ``v0.0.0`` and replaces them with ``./staging/...``; the wrapper replaces each
  one with its published ``v0.<minor>.<patch>`` twin instead.
* ``go.etcd.io/etcd/server/v3`` replaces its sibling modules with ``../api`` etc.;
  the wrapper requires the siblings at the same release.

The node binaries are built in the *same* wrapper module as kube-apiserver (its
``tools.go`` imports every Kubernetes command either set needs), so they resolve to
the same module versions and reuse its compiled packages in the Go build cache.

Binaries are linked with the same ``-X`` version variables the upstream release
scripts set, so ``--version`` reports the real release, and that output is what
decides whether a cached binary is reused. Builds are static (``CGO_ENABLED=0``),
so they do not depend on the C toolchain or libc of the machine that built them.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.controlplane import versions
from tests.controlplane.gotool import find_go, go_env
from tests.controlplane.tools import API_TOOLS, NODE_TOOLS, TOOL_NAMES, TOOLS, Tool

Log = Callable[[str], None]
_HEARTBEAT_SECONDS = 30.0


class BuildError(RuntimeError):
    """A tool could not be built; the message carries the command and the log tail."""


@dataclass(frozen=True)
class Testbin:
    """The cached binaries for the current pins."""

    dir: Path

    @property
    def kube_apiserver(self) -> Path:
        return self.dir / "kube-apiserver"

    @property
    def kubectl(self) -> Path:
        return self.dir / "kubectl"

    @property
    def etcd(self) -> Path:
        return self.dir / "etcd"

    @property
    def helm(self) -> Path:
        return self.dir / "helm"

    def binary(self, name: str) -> Path:
        """Any built binary by name (kubelet, kube-proxy, coredns, ...)."""
        return self.dir / name

    def version_lines(self) -> dict[str, str]:
        """First line of each binary's version output (what the report header prints)."""
        lines: dict[str, str] = {}
        for tool in TOOLS:
            for binary, (args, _expected) in tool.probes.items():
                lines[binary] = (_probe(self.dir / binary, args).splitlines() or ["not built"])[0]
        return lines


def _probe(binary: Path, args: Iterable[str]) -> str:
    """Version output of `binary`, or "" when it is missing or broken."""
    if not os.access(binary, os.X_OK):
        return ""
    try:
        done = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip() if done.returncode == 0 else ""


def _is_current(directory: Path, tool: Tool) -> bool:
    return all(
        expected in _probe(directory / binary, args)
        for binary, (args, expected) in tool.probes.items()
    )


def _go() -> str:
    go = find_go()
    if go is None:
        raise BuildError("no Go toolchain: install Go >= 1.24 or set AEGIS_GO=/path/to/go")
    return go


def _run(argv: list[str], cwd: Path, log_path: Path, log: Log, label: str) -> None:
    """Run a go command with its output in `log_path`, printing a heartbeat meanwhile."""
    started = time.monotonic()
    with log_path.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=go_env(), stdout=out, stderr=subprocess.STDOUT, text=True
        )
        while True:
            try:
                code = proc.wait(timeout=_HEARTBEAT_SECONDS)
                break
            except subprocess.TimeoutExpired:
                log(f"  ... {label}: {_elapsed(started)}")
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise BuildError(f"`{' '.join(argv)}` failed (exit {code}) in {cwd}:\n{tail}")


def _run_quiet(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def _elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _module_info(go: str, module: str, version: str, cwd: Path) -> dict[str, str]:
    """`go mod download -json`: where the module's go.mod and .info are in the module cache."""
    done = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        env=go_env(),
        cwd=cwd,
        check=False,
    )
    if done.returncode != 0:
        raise BuildError(f"go mod download {module}@{version} failed:\n{done.stdout}{done.stderr}")
    info: dict[str, str] = json.loads(done.stdout)
    return info


def module_dir(module: str, version: str) -> Path:
    """The module's extracted source in the Go module cache (downloaded when missing)."""
    with tempfile.TemporaryDirectory() as outside:  # outside any module
        return Path(_module_info(_go(), module, version, Path(outside))["Dir"])


def _staging_replaces(go_mod: str) -> list[str]:
    """The `k8s.io/<staging>` modules that k8s.io/kubernetes maps to ./staging/."""
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", go_mod, re.M)))


def _write_wrapper(src: Path, tool: Tool, go: str) -> str:
    """Write go.mod and tools.go for `tool`; returns the release date of the module.

    tools.go imports the commands of every tool sharing this wrapper, so that the
    module files are the same whichever of them is built first.
    """
    src.mkdir(parents=True, exist_ok=True)
    info = _module_info(go, tool.module, tool.version, cwd=src.parent)  # outside any module
    release = str(json.loads(Path(info["Info"]).read_text())["Time"])
    lines = [f"module aegis.local/testbin/{tool.name}", "", "go 1.24", "", "require ("]
    lines += [f"\t{mod} {tool.version}" for mod in (tool.module, *tool.siblings)]
    lines.append(")")
    if tool.k8s_staging:
        staging = _staging_replaces(Path(info["GoMod"]).read_text())
        if not staging:
            raise BuildError(f"no staging replace directives found in {info['GoMod']}")
        published = "v0." + tool.version.lstrip("v").split(".", 1)[1]
        lines += ["", "replace ("]
        lines += [f"\t{mod} => {mod} {published}" for mod in staging]
        lines.append(")")
    (src / "go.mod").write_text("\n".join(lines) + "\n")
    if tool.main_go:
        (src / "main.go").write_text(tool.main_go)
        (src / "tools.go").unlink(missing_ok=True)
        return release
    packages = [pkg for t in TOOLS if t.src_name == tool.src_name for pkg in t.binaries.values()]
    imports = "\n".join(f'import _ "{pkg}"' for pkg in packages)
    (src / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\n{imports}\n")
    return release


def build_tool(directory: Path, tool: Tool, log: Log) -> None:
    """Build every binary of `tool` into `directory` (replacing old ones atomically)."""
    go = _go()
    src = directory / "src" / tool.src_name
    log_path = src / "build.log"
    started = time.monotonic()
    log(f"{tool.name} {tool.version}: writing wrapper module in {src}")
    release = _write_wrapper(src, tool, go)
    log_path.write_text("")
    log(f"{tool.name}: go mod tidy (downloads modules on a cold cache)")
    _run([go, "mod", "tidy"], src, log_path, log, "go mod tidy")
    staging = directory / f".partial-{tool.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    ldflags = " ".join(["-s", "-w", *tool.ldflags(release)])
    if len(tool.binaries) > 1 and all(p.rsplit("/", 1)[-1] == b for b, p in tool.binaries.items()):
        # One go command for all of them: one binary links (single-threaded) while the
        # packages of the next still compile on the other cores.
        names = " ".join(tool.binaries)
        log(f"{tool.name}: go build {names} (log: {log_path})")
        argv = [go, "build", "-ldflags", ldflags, "-o", f"{staging}/", *tool.binaries.values()]
        _run(argv, src, log_path, log, f"go build {names}")
    else:
        for binary, package in tool.binaries.items():
            log(f"{tool.name}: go build {binary} (log: {log_path})")
            argv = [go, "build", "-ldflags", ldflags, "-o", str(staging / binary), package]
            _run(argv, src, log_path, log, f"go build {binary}")
    for binary in tool.binaries:
        os.replace(staging / binary, directory / binary)
    shutil.rmtree(staging, ignore_errors=True)
    if not _is_current(directory, tool):
        raise BuildError(f"{tool.name}: built binaries do not report {tool.version}")
    log(f"{tool.name}: built in {_elapsed(started)}")


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise builders (two pytest sessions, or make and an IDE) on one cache."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{versions.versions_key()}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _print(message: str) -> None:
    print(f"[testbin] {message}", flush=True)


def ensure(
    tools: Iterable[str] = API_TOOLS,
    *,
    root: Path | None = None,
    force: bool = False,
    log: Log = _print,
) -> Testbin:
    """Return the cached binaries for the pinned versions, building whatever is missing.

    A no-op (a few `--version` calls) when the cache is current.
    """
    wanted = [tool for tool in TOOLS if tool.name in set(tools)]
    directory = versions.testbin_dir(root)
    testbin = Testbin(directory)
    if not force and all(_is_current(directory, tool) for tool in wanted):
        return testbin
    with _locked(directory.parent):
        directory.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        for tool in wanted:
            if force or not _is_current(directory, tool):
                build_tool(directory, tool, log)
        stamp = {
            "pins": {tool.name: tool.version for tool in TOOLS},
            "go": _run_quiet([_go(), "env", "GOVERSION"]),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (directory / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
        log(f"build finished in {_elapsed(started)}")
    return testbin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument(
        "--tool", action="append", choices=TOOL_NAMES, help="build only this tool (repeatable)"
    )
    parser.add_argument(
        "--node", action="store_true", help="also the one-node cluster's binaries (kubelet, ...)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    _print(f"cache: {versions.testbin_dir()}")
    wanted = args.tool or (API_TOOLS + NODE_TOOLS if args.node else API_TOOLS)
    try:
        testbin = ensure(wanted, force=args.force)
    except BuildError as error:
        _print(f"FAILED: {error}")
        return 1
    for binary, line in testbin.version_lines().items():
        _print(f"{binary:15} {line}")
    _print(f"ready in {_elapsed(started)}: {testbin.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
