"""HTTP on every route: 404, 405 with Allow, 413, 415, each in the endpoint's error shape."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.sidecar.conftest import SidecarFactory

# Every route that takes a body, with a valid minimal body and its error shape.
BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "/v1/chat/completions": (
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        "openai",
    ),
    "/v1/embeddings": ({"model": "auto", "input": "hi"}, "openai"),
    "/v1/responses": ({"model": "auto", "input": "hi"}, "openai"),
    "/v1/messages": (
        {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
        "anthropic",
    ),
}


def error_of(body: dict[str, Any], shape: str) -> dict[str, Any]:
    """The error object, checking the shape: OpenAI's or Anthropic's."""
    if shape == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        assert isinstance(body.get("request_id", ""), str)
        return dict(body["error"])
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def small_bodies(doc: dict[str, Any]) -> None:
    doc["listen"] = {"maxBodyBytes": 4096}


@pytest.mark.parametrize("path", list(BODIES))
async def test_wrong_method_is_405_with_allow(make_sidecar: SidecarFactory, path: str) -> None:
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        root = sc.base_url.removesuffix("/v1")
        for method in ("GET", "PUT", "DELETE"):
            async with http.request(method, root + path) as resp:
                assert resp.status == 405
                assert resp.headers["Allow"] == "POST"
                error = error_of(await resp.json(), BODIES[path][1])
                assert method in error["message"] and "POST" in error["message"]
                if BODIES[path][1] == "anthropic":
                    assert error["type"] == "invalid_request_error"
                else:
                    assert error["code"] == "method_not_allowed"


async def test_405_on_get_routes_and_404_elsewhere(make_sidecar: SidecarFactory) -> None:
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        root = sc.base_url.removesuffix("/v1")
        for path in ("/v1/models", "/healthz", "/readyz"):
            async with http.post(root + path, json={}) as resp:
                assert resp.status == 405
                assert resp.headers["Allow"] == "GET, HEAD"
                assert error_of(await resp.json(), "openai")["code"] == "method_not_allowed"
        async with http.get(root + "/v1/nothing") as resp:
            assert resp.status == 404
            assert error_of(await resp.json(), "openai")["code"] == "unknown_url"
        async with http.post(root + "/v1/messages/count_tokens", json={}) as resp:
            assert resp.status == 404
            assert error_of(await resp.json(), "anthropic")["type"] == "not_found_error"


@pytest.mark.parametrize("path", list(BODIES))
async def test_non_json_body_is_415(make_sidecar: SidecarFactory, path: str) -> None:
    body, shape = BODIES[path]
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        url = sc.base_url.removesuffix("/v1") + path
        for content_type in (
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data",
        ):
            async with http.post(
                url, data=json.dumps(body), headers={"Content-Type": content_type}
            ) as resp:
                assert resp.status == 415
                error = error_of(await resp.json(), shape)
                assert content_type in error["message"]
                assert "application/json" in error["message"]
        # JSON with a charset, a +json type, or no Content-Type at all is read as JSON.
        for headers in (
            {"Content-Type": "application/json; charset=utf-8"},
            {"Content-Type": "application/vnd.example+json"},
            {},
        ):
            async with (
                aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as bare,
                bare.post(url, data=json.dumps(body).encode(), headers=headers) as resp,
            ):
                assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("path", list(BODIES))
async def test_oversize_body_is_413(make_sidecar: SidecarFactory, path: str) -> None:
    body, shape = BODIES[path]
    big = json.dumps({**body, "padding": "x" * 8000})
    async with make_sidecar(small_bodies) as sc, aiohttp.ClientSession() as http:
        url = sc.base_url.removesuffix("/v1") + path
        json_type = {"Content-Type": "application/json"}
        async with http.post(url, data=big, headers=json_type) as resp:
            assert resp.status == 413
            error = error_of(await resp.json(), shape)
            assert "4096" in error["message"]
            assert error["type"] == (
                "request_too_large" if shape == "anthropic" else "invalid_request_error"
            )

        async def chunks() -> Any:  # no Content-Length: the limit holds while reading
            for _ in range(10):
                yield b" " * 1000
            yield json.dumps(body).encode()

        async with http.post(url, data=chunks(), headers=json_type) as resp:
            assert resp.status == 413
            assert "4096" in error_of(await resp.json(), shape)["message"]


async def test_anthropic_version_header(make_sidecar: SidecarFactory) -> None:
    body, _ = BODIES["/v1/messages"]
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        url = sc.base_url + "/messages"
        for version in ("2023-06-01", "2023-01-01", None):
            headers = {"anthropic-version": version} if version else {}
            async with http.post(url, json=body, headers=headers) as resp:
                assert resp.status == 200
        async with http.post(url, json=body, headers={"anthropic-version": "2099-01-01"}) as resp:
            assert resp.status == 400
            error = error_of(await resp.json(), "anthropic")
            assert error["type"] == "invalid_request_error"
            assert "anthropic-version" in error["message"] and "2023-06-01" in error["message"]


@pytest.mark.parametrize("path", list(BODIES))
async def test_bad_json_is_400_in_shape(make_sidecar: SidecarFactory, path: str) -> None:
    shape = BODIES[path][1]
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        url = sc.base_url.removesuffix("/v1") + path
        for raw in (b"{not json", b"[1, 2]", b""):
            async with http.post(
                url, data=raw, headers={"Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 400
                error = error_of(await resp.json(), shape)
                assert "JSON" in error["message"]
