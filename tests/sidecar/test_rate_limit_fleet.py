"""Acceptance: four sidecar processes share one 600 RPM route limit for two minutes.

Four real sidecar processes (forked by the zygote: the code of ``aegis sidecar``) of
one route, a fake Ollama process and one PostgreSQL; 8 concurrent clients per
sidecar send chat requests without pause for two minutes of real time (a refused
client waits a quarter of a second at most before trying again: pacing, not
correctness). Nothing else uses the limit, so every admission of the run is a ledger
row with status ``ok``.

The clients stop sending ``MARGIN`` seconds before the two minutes end, and every
answer took less than ``MARGIN``: so every admission happened within the two minutes,
and the guarantee (at most R admissions in any 60 s window) makes it at most 1,200.
Checked: that bound; how close to it the run came (printed, and at least 95 %); every
429 carries ``Retry-After``, ``retry-after-ms`` and the ``x-ratelimit-*`` headers in
OpenAI's formats; the database never leased more than the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.sidecar.fleet import Fleet
from tests.sidecar.shared_helpers import fetch
from tests.sidecar.tenancy import provision

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SIDECARS = 4
CLIENTS = 8
RPM = 600
RUN = 120.0
MARGIN = 2.0
RESET = ("ms", "s")


def config(fleet: Fleet, url: str) -> dict[str, Any]:
    return {
        "identity": {"route": "chat", "namespace": "load"},
        "providers": [
            {
                "name": "local",
                "type": "ollama",
                "baseURL": fleet.url("ollama"),
                "models": {"default": "gemma3:4b"},
            }
        ],
        "default": {"provider": "local"},
        "rateLimits": {"requestsPerMinute": RPM},
        "ledger": {"url": url},
    }


class Tally:
    def __init__(self) -> None:
        self.admitted = 0
        self.refused = 0
        self.statuses: Counter[int] = Counter()
        self.slowest = 0.0
        self.bad_headers: list[dict[str, str]] = []


def check_refusal(headers: aiohttp.typedefs.LooseHeaders, tally: Tally) -> float:
    """The 429's headers as OpenAI's clients read them; returns the advised wait."""
    h = {k.lower(): v for k, v in dict(headers).items()}
    ok = (
        h.get("x-ratelimit-limit-requests") == str(RPM)
        and h.get("x-ratelimit-remaining-requests", "").isdigit()
        and h.get("x-ratelimit-reset-requests", "").endswith(RESET)
        and int(h.get("retry-after", "0")) >= 1
        and int(h.get("retry-after-ms", "0")) >= 1
    )
    if not ok:
        tally.bad_headers.append(h)
    return int(h.get("retry-after-ms", "250")) / 1000


async def client(session: aiohttp.ClientSession, url: str, stop_at: float, tally: Tally) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    while time.monotonic() < stop_at:
        sent = time.monotonic()
        async with session.post(url + "/v1/chat/completions", json=body) as response:
            await response.read()
            tally.slowest = max(tally.slowest, time.monotonic() - sent)
            tally.statuses[response.status] += 1
            if response.status == 200:
                tally.admitted += 1
                continue
            assert response.status == 429, await response.text()
            tally.refused += 1
            wait = check_refusal(response.headers, tally)
            await asyncio.sleep(min(wait, 0.25, max(stop_at - time.monotonic(), 0)))


async def test_four_sidecars_share_600_rpm_for_two_minutes(pg_url: str, tmp_path: Path) -> None:
    await provision(pg_url, "load")
    env = {"AEGIS_SPOOL_DIR": str(tmp_path / "spool")}
    async with Fleet(tmp_path, env) as fleet:
        await fleet.spawn("ollama", "ollama")
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config(fleet, pg_url)))
        pods = [f"pod-{i}" for i in range(SIDECARS)]
        await asyncio.gather(
            *(fleet.spawn(p, "sidecar", config=path, env={"POD_NAME": p}) for p in pods)
        )
        tally = Tally()
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=MARGIN * 5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            started = time.monotonic()
            stop_at = started + RUN - MARGIN
            await asyncio.gather(
                *(
                    client(session, fleet.url(p), stop_at, tally)
                    for p in pods
                    for _ in range(CLIENTS)
                )
            )
            elapsed = time.monotonic() - started
        await fleet.stop_all()
        logs = {p: fleet.log(p) for p in pods}

    [(rows,)] = await fetch(pg_url, "SELECT count(*) FROM aegis.ledger_entries WHERE status = 'ok'")
    [(refused_rows,)] = await fetch(
        pg_url, "SELECT count(*) FROM aegis.ledger_entries WHERE http_status = 429"
    )
    pools = await fetch(pg_url, "SELECT committed, limit_value FROM aegis.rate_pools")
    print(
        f"\n{SIDECARS} sidecars x {CLIENTS} clients, {RPM} RPM, {elapsed:.1f} s: "
        f"admitted {tally.admitted} of the bound {2 * RPM} "
        f"({100 * tally.admitted / (2 * RPM):.1f} %), refused {tally.refused}, "
        f"slowest answer {tally.slowest * 1000:.0f} ms"
    )
    assert elapsed <= RUN
    assert tally.slowest < MARGIN  # so every admission happened within the two minutes
    assert tally.admitted == rows  # every admission is a row, nothing more
    assert rows <= 2 * RPM
    assert rows >= 0.95 * 2 * RPM, "the limit should be nearly used up"
    assert refused_rows == tally.refused > 0
    assert not tally.bad_headers, tally.bad_headers[:3]
    assert set(tally.statuses) == {200, 429}
    assert pools == [(pools[0][0], RPM)] and pools[0][0] <= RPM
    for pod, log in logs.items():
        assert "Traceback" not in log, (pod, log[-3000:])
