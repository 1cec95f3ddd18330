"""The ``aegis`` command: one entry point for sidecar, operator, injector and ledger.

It lives on the operator side because it is the composition root: the sidecar
never imports the operator, so only this side may name both. Sub-commands import
their implementation lazily, so ``aegis sidecar`` does not pay for kopf. Logging
is set up here, before a long-running command starts (the sidecar's commands set
up their own).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def _sidecar(args: argparse.Namespace) -> int:
    from aegis.sidecar.commands import run_sidecar

    return run_sidecar(
        args.config,
        port=args.port,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )


def _ledger(args: argparse.Namespace) -> int:
    from aegis.sidecar.commands import run_ledger, run_retention, run_spool

    if args.ledger_command == "retention":
        return run_retention(
            config=args.config,
            url=args.url,
            keep_months=args.keep_months,
            export_dir=args.export_dir,
            no_export=args.no_export,
            fmt=args.export_format,
        )

    if args.ledger_command == "spool":
        return run_spool(
            config=args.config,
            url=args.url,
            directory=args.dir,
            discard=args.discard,
            as_json=args.json,
        )
    return run_ledger(
        args.ledger_command,
        config=args.config,
        url=args.url,
        fmt=getattr(args, "format", None),
        month=getattr(args, "month", None),
        output=getattr(args, "output", None),
        grant_control=getattr(args, "grant_control", None),
        grant_reader=getattr(args, "grant_reader", None),
        namespace=getattr(args, "namespace", None),
        tenant_url=getattr(args, "tenant_url", None),
        by=getattr(args, "by", None) or (),
        period=getattr(args, "period", None),
        timezone=getattr(args, "timezone", "UTC"),
    )


def _fake(args: argparse.Namespace) -> int:
    from aegis.sidecar.fakes.__main__ import main as fake_main

    forwarded = ["--kind", args.kind, "--host", args.host, "--port", str(args.port)]
    fake_main(forwarded)
    return 0


def _configure_logging(level: str | None = None) -> None:
    """JSON lines on stderr (``AEGIS_LOG_FORMAT=text`` for plain text)."""
    import logging

    from aegis.sidecar.logs import configure_logging

    configure_logging(level)
    # The Kubernetes client's HTTP library logs every request at INFO.
    logging.getLogger("httpx2").setLevel(logging.WARNING)


def _operator(args: argparse.Namespace) -> int:
    import os

    from .controllers import Options
    from .runner import RunConfig, main

    options = Options(
        budget_interval=args.budget_interval,
        resync_interval=args.resync_interval,
        rollout_tick=args.rollout_tick,
        sync_heartbeat=args.sync_heartbeat,
        platform_namespace=args.platform_namespace
        or os.environ.get("AEGIS_PLATFORM_NAMESPACE")
        or None,
        check_secrets=args.check_secrets,
        tenant_secret=args.tenant_secret,
        tenant_url=os.environ.get(args.tenant_url_env) or None,
    )
    config = RunConfig(
        namespaces=[] if args.all_namespaces else args.namespace,
        options=options,
        health_host=args.health_host,
        health_port=args.health_port,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        ledger_dsn=os.environ.get(args.ledger_dsn_env) or None,
        control_dsn=os.environ.get(args.ledger_control_dsn_env) or None,
    )
    _configure_logging(args.log_level)
    return main(config)


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _add_operator(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    op = commands.add_parser(
        "operator",
        help="run the Kubernetes operator (LLMRoute -> ConfigMap, LLMBudget status)",
        description="Reconcile LLMRoute and LLMBudget objects (kopf). Credentials: in-cluster "
        "service account, else KUBECONFIG / ~/.kube/config. The ledger DSN is read from the "
        "environment (never from the command line).",
    )
    scope = op.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; glob patterns need list/watch on namespaces)",
    )
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="watch every namespace (the default when no --namespace is given)",
    )
    op.add_argument(
        "--platform-namespace",
        default=None,
        help="namespace whose LLMBudgets may apply to other namespaces (spec.namespaces); "
        "default $AEGIS_PLATFORM_NAMESPACE",
    )
    op.add_argument("--health-host", default="0.0.0.0", help="liveness endpoint address")
    op.add_argument("--health-port", type=int, default=8080, help="liveness port (/healthz)")
    op.add_argument("--metrics-host", default="0.0.0.0", help="metrics address")
    op.add_argument("--metrics-port", type=int, default=9090, help="Prometheus port (/metrics)")
    op.add_argument(
        "--budget-interval",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="ledger read interval per LLMBudget (default 30)",
    )
    op.add_argument(
        "--resync-interval",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="full re-check interval per LLMRoute (default 300)",
    )
    op.add_argument(
        "--rollout-tick",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how often each LLMRoute with spec.rollout checks whether its analysis is due "
        "(default 10; the step length is spec.rollout.interval)",
    )
    op.add_argument(
        "--sync-heartbeat",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="rewrite LLMBudget status.lastSync at least this often (default 300)",
    )
    op.add_argument(
        "--ledger-dsn-env",
        default="AEGIS_LEDGER_DSN",
        metavar="VAR",
        help="environment variable holding the ledger DSN of the read-only role (budget "
        "status, rollout analysis; default AEGIS_LEDGER_DSN)",
    )
    op.add_argument(
        "--ledger-control-dsn-env",
        default="AEGIS_LEDGER_CONTROL_DSN",
        metavar="VAR",
        help="environment variable holding the ledger DSN of the control role (budget "
        "limits, tenant roles; default AEGIS_LEDGER_CONTROL_DSN)",
    )
    op.add_argument(
        "--check-secrets",
        action="store_true",
        help="check that the Secrets and keys routes refer to exist (needs get on Secrets "
        "in the served namespaces; Ready then tells route authors which exist)",
    )
    op.add_argument(
        "--tenant-secret",
        default=None,
        metavar="NAME",
        help="give every namespace with an LLMRoute a ledger role of its own and write its "
        "DSN to Secret NAME there (needs the control DSN); default: off",
    )
    op.add_argument(
        "--tenant-url-env",
        default="AEGIS_LEDGER_TENANT_URL",
        metavar="VAR",
        help="environment variable holding the ledger URL sidecars reach (host, port, "
        "database; no credentials); default: the control DSN's",
    )
    op.add_argument("--log-level", default=None, help="default $AEGIS_LOG_LEVEL or INFO")
    op.set_defaults(handler=_operator)


def _demo(args: argparse.Namespace) -> int:
    from aegis.sidecar.demo import main as demo_main

    return demo_main()


def _injector(args: argparse.Namespace) -> int:
    from .injector.command import run_injector

    if not args.print_manifests:
        _configure_logging()
    return run_injector(args)


def _probe(args: argparse.Namespace) -> int:
    from .injector.probe import probe

    return probe(args.url, timeout=args.timeout)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("aegis-llm")
    except metadata.PackageNotFoundError:  # run from a source tree without an install
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aegis",
        description="Aegis: LLM routing sidecar, Kubernetes operator and cost ledger.",
    )
    parser.add_argument("--version", action="version", version=f"aegis {_version()}")
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
    sidecar.add_argument(
        "--metrics-host",
        default=None,
        help="override listen.metricsHost (the API itself always stays on loopback)",
    )
    sidecar.set_defaults(handler=_sidecar)

    ledger = commands.add_parser("ledger", help="migrate, export or report the cost ledger")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    for name, text in (
        ("migrate", "create or upgrade the ledger schema (Alembic)"),
        ("export", "write ledger rows as CSV or JSON"),
        ("report", "spend by month, namespace, provider and model, with budget utilisation"),
        ("tenant", "create a namespace's ledger role (or set a new password); print its DSN"),
        ("spool", "show the sidecar's spool and rows held for another ledger; discard them"),
        ("retention", "export, then drop, the ledger's months older than --keep-months"),
    ):
        action = ledger_commands.add_parser(name, help=text)
        source = action.add_mutually_exclusive_group(required=name != "spool")
        source.add_argument("--config", type=Path, help="sidecar config (ledger URL, budgets)")
        source.add_argument("--url", help="SQLAlchemy URL of the ledger database")
        if name in ("export", "report"):
            action.add_argument(
                "--month",
                help="YYYY-MM (default: all months for export, the current month for report)",
            )
            action.add_argument(
                "--by",
                action="append",
                metavar="KEYS",
                help="spend grouped by namespace, workload, service_account, route, provider, "
                "model or month (comma-separated or repeated); reads the whole ledger: the "
                "owner's or the reader role's DSN",
            )
            action.add_argument(
                "--period",
                help="with --by: the rows created in a day (YYYY-MM-DD), ISO week (YYYY-Www) "
                "or month (YYYY-MM) of --timezone",
            )
            action.add_argument(
                "--timezone", default="UTC", help="IANA time zone of --period (default UTC)"
            )
            formats = ("csv", "json") if name == "export" else ("text", "csv", "json")
            action.add_argument(
                "--format",
                choices=formats,
                help=f"default {formats[0]}; csv and json of a report need --by",
            )
            action.add_argument("--output", type=Path, help="file to write (default: stdout)")
        if name == "migrate":
            action.add_argument(
                "--grant-control",
                metavar="ROLE",
                help="after migrating (as the owner), let ROLE write budget limits and "
                "manage tenant roles (the operator's control role)",
            )
            action.add_argument(
                "--grant-reader",
                metavar="ROLE",
                help="after migrating, let ROLE read the ledger (the operator's status and "
                "rollout analysis, dashboards)",
            )
        if name == "retention":
            action.add_argument(
                "--keep-months",
                type=int,
                required=True,
                help="months kept, the current one included (at least 2)",
            )
            action.add_argument(
                "--export-dir", type=Path, help="write each month's rows here before dropping"
            )
            action.add_argument("--no-export", action="store_true", help="drop without exporting")
            action.add_argument(
                "--export-format", choices=("csv", "json"), default="csv", help="default csv"
            )
        if name == "spool":
            action.add_argument("--dir", type=Path, help="spool directory (default: the sidecar's)")
            action.add_argument("--discard", metavar="NAME", help="delete this held set")
            action.add_argument("--json", action="store_true", help="print JSON")
        if name == "tenant":
            action.add_argument("--namespace", required=True, help="the tenant's namespace")
            action.add_argument(
                "--tenant-url",
                metavar="URL",
                help="host, port and database the sidecars use (default: --url's)",
            )
    ledger.set_defaults(handler=_ledger)

    fake = commands.add_parser(
        "fake-upstream", help="run a fake LLM provider (OpenAI, DashScope, Ollama wire)"
    )
    fake.add_argument("--kind", choices=("openai", "dashscope", "ollama"), required=True)
    fake.add_argument(
        "--host", default="127.0.0.1", help="address to bind (0.0.0.0 behind a Service)"
    )
    fake.add_argument("--port", type=int, default=0)
    fake.set_defaults(handler=_fake)

    _add_operator(commands)

    demo = commands.add_parser("demo", help="offline demo against fake upstreams")
    demo.set_defaults(handler=_demo)

    injector = commands.add_parser(
        "injector", help="run the sidecar-injecting admission webhook (HTTPS)"
    )
    # settings imports nothing heavy; it also names the AEGIS_INJECTOR_* variables.
    from .injector.settings import add_arguments as injector_arguments

    injector_arguments(injector)
    injector.set_defaults(handler=_injector)

    probe = commands.add_parser(
        "probe", help="exit 0 when an http:// URL answers 2xx (the sidecar's exec probes)"
    )
    probe.add_argument("url")
    probe.add_argument("--timeout", type=float, default=2.0)
    probe.set_defaults(handler=_probe)
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
