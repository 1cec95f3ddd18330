"""``python -m aegis.sidecar.fakes --kind openai --port 0``: run one fake upstream.

Prints the fake's base URL on the first line of stdout (flushed, so a parent
process can read it) and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from .knobs import KINDS, Knobs
from .server import FakeUpstream


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m aegis.sidecar.fakes", description="Run a fake LLM provider."
    )
    parser.add_argument("--kind", choices=KINDS, default="openai")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--knobs", default=None, help="JSON object of initial knobs")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    knobs = Knobs()
    if args.knobs:
        knobs.update(json.loads(args.knobs))
    fake = FakeUpstream(args.kind, host=args.host, port=args.port, knobs=knobs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        sys.stdout.write(fake.base_url + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
