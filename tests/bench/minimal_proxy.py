"""The baseline: the least an aiohttp pass-through proxy can do.

One shared client session, the body forwarded as bytes, the answer streamed back
chunk by chunk, on the same event loop as the sidecar (uvloop's when installed).
No routing, budget, ledger or metrics: what the sidecar adds on top is
measured against this.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    session = request.app[SESSION]
    url = request.app[UPSTREAM] + request.path.removeprefix("/v1")
    async with session.post(
        url, data=body, headers={"Content-Type": "application/json", "Authorization": "Bearer x"}
    ) as upstream:
        response = web.StreamResponse(
            status=upstream.status, headers={"Content-Type": upstream.headers["Content-Type"]}
        )
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    async def make() -> web.Application:
        app = web.Application()
        app[UPSTREAM] = args.upstream
        app[SESSION] = aiohttp.ClientSession()
        app.router.add_post("/v1/chat/completions", forward)
        app.router.add_get("/readyz", ready)

        async def close(app: web.Application) -> None:
            await app[SESSION].close()

        app.on_cleanup.append(close)
        return app

    try:  # the event loop the sidecar runs on: uvloop's when installed
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(make(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
