"""``python -m tests.cluster up|down|status|check|images``: ``make cluster``, ``cluster-down``.

* ``up``: build what is missing (binaries, images), start the cluster or reuse a healthy
  one, import the current images, and print ``export KUBECONFIG=<path>`` last.
* ``down``: remove the cluster, then check that nothing of it is left (exit 1 if so).
* ``status``: exit 0 when a healthy, current cluster runs.
* ``check``: list what of the cluster is on the machine (exit 1 when anything is).
* ``images``: build the images only and print their references.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from tests.controlplane import build, versions
from tests.controlplane.tools import API_TOOLS, NODE_TOOLS

from . import image_build as image_builder
from .cleanup import leftovers
from .cluster import Cluster
from .images import Images
from .layout import Layout
from .shell import ClusterError


def _print(message: str) -> None:
    print(f"[cluster] {message}", flush=True)


def _prepare() -> tuple[build.Testbin, Images]:
    started = time.monotonic()
    testbin = build.ensure(API_TOOLS + NODE_TOOLS, log=_print)
    _print(f"binaries ready in {time.monotonic() - started:.0f}s: {testbin.dir}")
    started = time.monotonic()
    images = image_builder.ensure(testbin, _print)
    _print(f"images ready in {time.monotonic() - started:.0f}s")
    return testbin, images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=("up", "down", "status", "check", "images"))
    parser.add_argument(
        "--keep-failed", action="store_true", help="up: leave a failed start for debugging"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        _print("needs root (network namespaces, mounts, cgroups)")
        return 2
    layout = Layout.from_env()
    try:
        if args.command == "images":
            _testbin, images = _prepare()
            for image in images.all():
                _print(f"{image.short}  ({image.archive})")
            return 0
        if args.command == "check":
            found = leftovers(layout)
            for item in found:
                _print(f"left: {item}")
            return 1 if found else 0
        testbin = build.Testbin(versions.testbin_dir())
        if args.command == "down":
            found = Cluster(layout, testbin, _print).down()
            for item in found:
                _print(f"LEFT BEHIND: {item}")
            _print("nothing left behind" if not found else f"{len(found)} things left behind")
            return 1 if found else 0
        if args.command == "status":
            problems = Cluster(layout, testbin, _print).problems()
            _print("healthy" if not problems else "; ".join(problems))
            return 1 if problems else 0
        testbin, images = _prepare()
        cluster = Cluster(layout, testbin, _print, keep_failed=args.keep_failed)
        reused = cluster.up(images, owner="make cluster")
        _print("reusing the running cluster" if reused else "started")
        print(cluster.kubectl("get", "nodes,pods", "-A", "-o", "wide"), flush=True)
        _print(
            f"Aegis image: {images.aegis.short} (helm: --set image.repository="
            f"{images.aegis.repository} --set image.tag={images.aegis.tag})"
        )
        _print(
            f"PostgreSQL image: {images.postgres.short} (helm: --set postgresql.enabled=true "
            f"--set postgresql.image.repository={images.postgres.repository} "
            f"--set postgresql.image.tag={images.postgres.tag} "
            "--set postgresql.image.pullPolicy=Never --set postgresql.persistence.enabled=false)"
        )
        _print(f"kubectl, helm: {testbin.dir}; remove with `make cluster-down`")
    except (ClusterError, build.BuildError) as error:
        _print(f"FAILED: {error}")
        return 1
    print(f"export KUBECONFIG={layout.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
