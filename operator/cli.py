"""The ``aegis`` command: one entry point for sidecar, operator, injector and ledger.

It lives on the operator side because it is the composition root: the sidecar
never imports the operator, so only this side may name both. Sub-commands import
their implementation lazily, so ``aegis sidecar`` does not pay for kopf.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def _sidecar(args: argparse.Namespace) -> int:
    from aegis.sidecar.commands import run_sidecar

    return run_sidecar(args.config, port=args.port, metrics_port=args.metrics_port)


def _ledger(args: argparse.Namespace) -> int:
    from aegis.sidecar.commands import run_ledger

    return run_ledger(
        args.ledger_command,
        config=args.config,
        url=args.url,
        fmt=getattr(args, "format", "csv"),
        month=getattr(args, "month", None),
        output=getattr(args, "output", None),
    )


def _fake(args: argparse.Namespace) -> int:
    from aegis.sidecar.fakes.__main__ import main as fake_main

    forwarded = ["--kind", args.kind, "--port", str(args.port)]
    fake_main(forwarded)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from aegis.sidecar.demo import main as demo_main

    return demo_main()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aegis",
        description="Aegis: LLM routing sidecar, Kubernetes operator and cost ledger.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    sidecar = commands.add_parser(
        "sidecar", help="run the OpenAI-compatible routing proxy on 127.0.0.1"
    )
    sidecar.add_argument(
        "--config",
        type=Path,
        required=True,
        help="YAML file, or a directory holding config.yaml (a mounted ConfigMap)",
    )
    sidecar.add_argument("--port", type=int, default=None, help="override listen.port")
    sidecar.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="override listen.metricsPort (0: any free port)",
    )
    sidecar.set_defaults(handler=_sidecar)

    ledger = commands.add_parser("ledger", help="migrate, export or report the cost ledger")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    for name, text in (
        ("migrate", "create or upgrade the ledger schema (Alembic)"),
        ("export", "write ledger rows as CSV or JSON"),
        ("report", "spend by month, provider and model, with budget utilisation"),
    ):
        action = ledger_commands.add_parser(name, help=text)
        source = action.add_mutually_exclusive_group(required=True)
        source.add_argument("--config", type=Path, help="sidecar config (ledger URL, budgets)")
        source.add_argument("--url", help="SQLAlchemy URL of the ledger database")
        if name in ("export", "report"):
            action.add_argument(
                "--month",
                help="YYYY-MM (default: all months for export, the current month for report)",
            )
        if name == "export":
            action.add_argument("--format", choices=("csv", "json"), default="csv")
            action.add_argument("--output", type=Path, help="file to write (default: stdout)")
    ledger.set_defaults(handler=_ledger)

    fake = commands.add_parser(
        "fake-upstream", help="run a fake LLM provider (OpenAI, DashScope, Ollama wire)"
    )
    fake.add_argument("--kind", choices=("openai", "dashscope", "ollama"), required=True)
    fake.add_argument("--port", type=int, default=0)
    fake.set_defaults(handler=_fake)

    demo = commands.add_parser("demo", help="offline demo against fake upstreams")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
