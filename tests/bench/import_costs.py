"""What each import costs the sidecar process in memory (RSS), in the order it loads.

A fresh interpreter imports the sidecar's dependencies one group at a time, in the
order the sidecar loads them, and the RSS growth of each step is printed: a
package's cost beyond what the ones before it already loaded (``asyncio`` carries
OpenSSL's libraries, ``aiohttp`` then adds its own modules and C parsers). The last
rows are the sidecar's own modules. Then the same for the minimal aiohttp proxy of
the benchmark, the floor the sidecar is compared with.

    python tests/bench/import_costs.py
"""

from __future__ import annotations

import subprocess
import sys

# The sidecar's imports, grouped and in the order they load.
SIDECAR = (
    "asyncio",
    "uvloop",
    "multidict, yarl, email.message, http.client",
    "aiohttp",
    "aiohttp.web",
    "orjson",
    "yaml",
    "msgspec",
    "re2",
    "prometheus_client",
    "aiosqlite",
    "aegis.sidecar.contract",
    "aegis.sidecar.ledger.store",
    "aegis.sidecar.http.server",
    "aegis.operator.cli, aegis.sidecar.commands",
)
MINIMAL = ("asyncio", "uvloop", "aiohttp", "aiohttp.web")

PROBE = """
import gc, importlib, re, sys
def rss():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmRSS:\\s+(\\d+)", status).group(1)) / 1024
print(f"start {rss():.2f}")
for step in sys.argv[1:]:
    for name in step.split(", "):
        importlib.import_module(name)
    gc.collect()
    print(f"{step} {rss():.2f}")
"""


def steps(imports: tuple[str, ...]) -> list[tuple[str, float]]:
    """(step, RSS in MB after it), median of three fresh interpreters."""
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, *imports], capture_output=True, text=True, check=True
        )
        runs.append([line.rsplit(" ", 1) for line in out.stdout.splitlines()])
    return [
        (runs[0][i][0], sorted(float(run[i][1]) for run in runs)[1]) for i in range(len(runs[0]))
    ]


def report(title: str, imports: tuple[str, ...]) -> None:
    print(f"\n{title}\n{'import':52} {'+MB':>6} {'RSS MB':>7}")
    previous = None
    for step, mb in steps(imports):
        grew = "" if previous is None else f"{mb - previous:+6.1f}"
        print(f"{step:52} {grew:>6} {mb:7.1f}")
        previous = mb


def main() -> None:
    report("the sidecar's imports, in the order they load", SIDECAR)
    report("the minimal aiohttp proxy's", MINIMAL)


if __name__ == "__main__":
    main()
