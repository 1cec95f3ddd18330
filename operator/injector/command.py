"""What ``aegis injector`` does (the parser lives in the CLI)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import yaml

from . import manifests
from .settings import InjectorSettings, from_args


def rendered_manifests(settings: InjectorSettings) -> list[dict[str, Any]]:
    """The webhook configuration and RBAC matching these settings."""
    server = settings.server
    secret_mode = server.tls_mode == "secret"
    config = manifests.webhook_configuration(
        name=server.webhook_config or "aegis-injector",
        namespace=server.namespace,
        service_name=server.service_name,
        protected_namespaces=server.protected_namespaces,
    )
    return [
        config,
        *manifests.rbac(
            namespace=server.namespace,
            webhook_config=server.webhook_config if secret_mode else None,
            tls_secret=server.tls_secret if secret_mode else None,
        ),
    ]


def run_injector(args: argparse.Namespace) -> int:
    try:
        settings = from_args(args)
    except ValueError as exc:
        print(f"aegis injector: {exc}", file=sys.stderr)
        return 2
    if args.print_manifests:
        yaml.safe_dump_all(rendered_manifests(settings), sys.stdout, sort_keys=False)
        return 0
    from .webhook import run_forever  # aiohttp and the client: only to serve

    asyncio.run(run_forever(settings))
    return 0
