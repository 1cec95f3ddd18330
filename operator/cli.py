"""The ``aegis`` command: one entry point for sidecar, operator, injector and ledger.

It lives on the operator side because it is the composition root: the sidecar
never imports the operator, so only this side may name both. Sub-commands import
their implementation lazily, so ``aegis sidecar`` does not pay for kopf.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aegis",
        description="Aegis: LLM routing sidecar, Kubernetes operator and cost ledger.",
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
