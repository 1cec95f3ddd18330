"""Hot reload of a mounted config directory, with traffic running throughout."""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client import Gauge

from aegis.sidecar.contract import parse_config
from tests.sidecar.conftest import Fakes, SidecarFactory, base_document, client_for

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll ``check`` until it holds (the watcher runs on its own schedule)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)  # poll interval; the deadline is asserted above


def swap_configmap(directory: Path, document: dict[str, Any] | str) -> None:
    """Write a new version the way the kubelet does: a new data dir, then an atomic
    rename of the ``..data`` symlink that ``config.yaml`` points through."""
    text = document if isinstance(document, str) else yaml.safe_dump(document)
    version = directory / f"..{os.urandom(4).hex()}"
    version.mkdir()
    (version / "config.yaml").write_text(text)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(version.name)
    tmp.rename(directory / "..data")


async def test_reload_applies_changes_and_refuses_invalid_ones(
    make_sidecar: SidecarFactory, fakes: Fakes, tmp_path: Path
) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    first_doc = base_document(fakes, tmp_path / "ledger.db")
    swap_configmap(mount, first_doc)
    (mount / "config.yaml").symlink_to("..data/config.yaml")

    async with make_sidecar(config_path=mount) as sc:
        client = client_for(sc)
        stop = asyncio.Event()
        answered: list[str] = []
        failures: list[BaseException] = []

        async def traffic() -> None:
            while not stop.is_set():
                try:
                    raw = await client.chat.completions.with_raw_response.create(
                        model="auto", messages=USER
                    )
                    answered.append(raw.headers["x-aegis-provider"])
                except Exception as exc:  # any failure during reload is a bug
                    failures.append(exc)

        runner = asyncio.create_task(traffic())
        await eventually(lambda: _true(len(answered) >= 3))
        old_hash = sc.runtime.current.hash

        changed = dict(first_doc, default={"provider": "openai"})
        swap_configmap(mount, changed)
        await eventually(lambda: _true(sc.runtime.current.hash != old_hash))
        count = len(answered)
        await eventually(lambda: _true(len(answered) >= count + 3))
        assert answered[-1] == "openai"

        good_hash = sc.runtime.current.hash
        broken = dict(changed, default={"provider": "no-such-provider"})
        swap_configmap(mount, broken)
        await eventually(lambda: _true(sc.runtime.reload_state.last_error is not None))
        assert "default.provider" in (sc.runtime.reload_state.last_error or "")
        assert sc.runtime.current.hash == good_hash
        async with (
            aiohttp.ClientSession() as http,
            http.get(sc.base_url.removesuffix("/v1") + "/readyz") as resp,
        ):
            ready = await resp.json()
        assert resp.status == 200
        assert "no-such-provider" in ready["config"]["lastReloadError"]
        swap_configmap(mount, "providers: [not yaml for us")
        invalid = sc.runtime.metrics.config_reloads.labels("invalid")
        await eventually(lambda: _true(invalid._value.get() == 2))
        assert "not valid YAML" in (sc.runtime.reload_state.last_error or "")
        count = len(answered)
        await eventually(lambda: _true(len(answered) >= count + 3))
        assert answered[-1] == "openai"
        stop.set()
        await runner
        assert failures == []
        metrics = sc.runtime.metrics
        assert metrics.config_reloads.labels("applied")._value.get() == 1
        assert metrics.config_reloads.labels("invalid")._value.get() == 2
        assert metrics.config_valid._value.get() == 0


async def _true(value: bool) -> bool:
    return value


class ReloadingGauge(Gauge):
    """The in-flight gauge, which the sidecar raises while it serves a request, with a
    hook: the first ``inc`` runs ``hook`` (a hot reload landing mid-request)."""

    hook: Callable[[], None] | None = None

    def inc(self, amount: float = 1) -> None:
        super().inc(amount)
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()


def run_to_completion(step: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends (``Runtime.apply``) synchronously."""
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise AssertionError("Runtime.apply suspended; it must apply a config in one step")


def private_classes(classes: list[str], local: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["privacy"] = {
            "classes": classes,
            "localOnly": [local],
            "defaultClass": classes[0],
            "detectedClass": local,
        }
        document["rules"] = []
        document["default"] = {"provider": "openai"}
        document["fallback"] = []

    return edit


async def test_one_request_reads_one_config_snapshot_across_a_reload(
    make_sidecar: SidecarFactory, fakes: Fakes, tmp_path: Path
) -> None:
    """A reload while a request is being served must not mix two configs: facts (its
    data class) and routing (which classes stay local) come from the same snapshot.

    Before: PII detected under the old config (class ``pii``), routed under the new
    one (where only ``secret`` stays local), went to the cloud provider."""
    before = private_classes(["public", "pii"], "pii")
    after = copy.deepcopy(base_document(fakes, tmp_path / "ledger.db"))
    private_classes(["public", "secret"], "secret")(after)
    reloaded = parse_config(yaml.safe_dump(after).encode(), tmp_path / "after.yaml")

    async with make_sidecar(before) as sc:
        gauge = ReloadingGauge("test_inflight", "in-flight requests", registry=None)
        gauge.hook = lambda: run_to_completion(sc.runtime.apply(reloaded))
        sc.runtime.metrics.inflight = gauge
        raw = await client_for(sc).chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "mail me at jane.doe@example.com"}],
        )
        assert sc.runtime.current.hash == reloaded.hash, "the reload happened mid-request"
        served = (raw.headers["x-aegis-data-class"], raw.headers["x-aegis-provider"])
        assert served in {("pii", "local"), ("secret", "local")}, served
