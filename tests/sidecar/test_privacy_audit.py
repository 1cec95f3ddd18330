"""Audit: every privacy decision is on the request's ledger row and in the metrics
(declared class, the detectors that fired, kept local / masked), never the value."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import Fakes, SidecarFactory, client_for
from .shared_helpers import sample

VALUE = "john.doe@example.com"


def route(document: dict[str, Any]) -> None:
    document["default"] = {"provider": "openai"}
    document["privacy"] = {
        "mask": ["pii"],
        "patterns": [{"name": "emp", "regex": "EMP-[0-9]{6}", "dataClass": "hipaa"}],
    }


async def test_each_decision_is_recorded_without_the_value(
    make_sidecar: SidecarFactory, fakes: Fakes, tmp_path: Path
) -> None:
    fakes.openai.set_knobs(record_bodies=True, echo=True)
    async with make_sidecar(route) as sc:
        client = client_for(sc)
        sent = [
            ("plain", "hello there", {}),
            ("masked", f"write to {VALUE} please", {}),
            ("custom", "employee EMP-123456 asked", {}),
            ("declared", "hello again", {"X-Aegis-Data-Class": "pii"}),
        ]
        ids = {}
        for name, text, headers in sent:
            reply = await client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": text}], extra_headers=headers
            )
            ids[name] = reply.headers["x-aegis-request-id"]
            if name == "masked":  # the cloud fake echoed the placeholder: restored
                assert VALUE in (reply.parse().choices[0].message.content or "")
        assert sc.metrics_port is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{sc.metrics_port}/metrics") as resp,
        ):
            metrics = await resp.text()
    assert all(VALUE not in entry.get("raw", "") for entry in fakes.openai.requests)
    for action in ("masked", "kept_local", "declared_local"):
        assert f'action="{action}"' in metrics, action
    assert sample(metrics, "aegis_pii_detections_total", kind="custom:emp") == 1.0
    database = tmp_path / "ledger.db"
    with sqlite3.connect(database) as db:
        rows = {
            r[0]: r[1:]
            for r in db.execute(
                "SELECT request_id, provider, data_class, declared_class, pii_detectors, "
                "privacy_action FROM ledger_entries"
            )
        }
    assert rows[ids["plain"]] == ("openai", "internal", "internal", None, "none")
    assert rows[ids["masked"]] == ("openai", "internal", "internal", "email", "masked")
    assert rows[ids["custom"]] == ("local", "hipaa", "internal", "custom:emp", "kept_local")
    assert rows[ids["declared"]] == ("local", "pii", "pii", None, "declared_local")
    assert VALUE.encode() not in database.read_bytes()
