"""The fakes' own invoice: every call they answered, per API key, priced by the
``prices`` knob, including calls whose caller hung up before reading the answer."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import aiohttp
import openai

from aegis.sidecar.fakes import FakeUpstream

PRICES = {"gpt-4o": {"inputPer1M": "2.5", "outputPer1M": "10"}}


async def invoice(fake: FakeUpstream) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(fake.root_url + "/_fake/invoice") as response,
    ):
        assert response.status == 200
        doc: dict[str, object] = await response.json()
        return doc


async def test_calls_are_billed_per_key_at_the_providers_prices() -> None:
    async with FakeUpstream.start("openai", prices=PRICES) as fake:
        a = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-a", max_retries=0)
        b = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-b", max_retries=0)
        messages: list[openai.types.chat.ChatCompletionMessageParam] = [
            {"role": "user", "content": "one two three"}
        ]
        first = await a.chat.completions.create(
            model="gpt-4o", messages=messages, max_tokens=3, user="call-1"
        )
        stream = await a.chat.completions.create(
            model="gpt-4o",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        [usage] = [chunk.usage async for chunk in stream if chunk.usage is not None]
        await b.embeddings.create(model="text-embedding-3-small", input="hello")
        fake.set_knobs(fail_next=1)
        with contextlib.suppress(openai.InternalServerError):  # not billed
            await b.chat.completions.create(model="gpt-4o", messages=messages)
        await a.close()
        await b.close()

        doc = await invoice(fake)
        assert first.usage is not None
        calls = doc["calls"]
        assert isinstance(calls, list) and len(calls) == 3
        assert calls[0]["id"] == first.id and calls[0]["tag"] == "call-1"
        expected = (
            Decimal("2.5") * first.usage.prompt_tokens + 10 * first.usage.completion_tokens
        ) / 1_000_000
        assert Decimal(calls[0]["costUSD"]) == expected.quantize(Decimal("0.000001"))
        streamed = (Decimal("2.5") * usage.prompt_tokens + 10 * usage.completion_tokens) / 10**6
        keys = doc["keys"]
        assert isinstance(keys, dict)
        assert keys["sk-a"]["calls"] == 2
        micro = Decimal("0.000001")  # each call is rounded on its own
        assert Decimal(keys["sk-a"]["costUSD"]) == expected.quantize(micro) + streamed.quantize(
            micro
        )
        assert (keys["sk-b"]["calls"], keys["sk-b"]["costUSD"]) == (1, "0.000000")  # unpriced


async def test_a_call_whose_caller_hung_up_is_still_billed() -> None:
    async with FakeUpstream.start("openai", prices=PRICES, drip_bytes_per_second=50) as fake:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": "Bearer sk-gone"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                fake.base_url + "/chat/completions", json=body, headers=headers
            ) as response,
        ):
            assert response.status == 200
            await response.content.readexactly(5)  # the answer is on its way: hang up
        # Billed when the fake decided to answer, before the first byte went out.
        [call] = fake.state.invoice.calls
        assert call.key == "sk-gone" and call.cost_usd > 0
        fake.reset()
        assert (await invoice(fake))["calls"] == []
