"""docs/openapi.yaml stays true: its paths are the sidecar's, its examples are
served, and the errors it describes are the shapes the sidecar answers with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import yaml

from aegis.sidecar.http import MODEL_ROUTES
from tests.sidecar.conftest import SidecarFactory

SPEC: dict[str, Any] = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text()
)


# A required field of each API, given the wrong type.
BROKEN = {
    "/v1/chat/completions": "messages",
    "/v1/embeddings": "input",
    "/v1/responses": "input",
    "/v1/messages": "max_tokens",
}


def error_schema(path: str, status: str) -> str:
    operation = next(iter(SPEC["paths"][path].values()))
    ref: str = operation["responses"][status]["$ref"]
    response = SPEC["components"]["responses"][ref.rsplit("/", 1)[1]]
    schema_ref: str = response["content"]["application/json"]["schema"]["$ref"]
    return schema_ref.rsplit("/", 1)[1]


def test_the_paths_are_the_sidecars() -> None:
    posts = {path for path, item in SPEC["paths"].items() if "post" in item}
    gets = {path for path, item in SPEC["paths"].items() if "get" in item}
    assert posts == set(MODEL_ROUTES)
    assert gets == {"/v1/models", "/healthz", "/readyz"}


def test_each_api_documents_its_own_error_shape() -> None:
    for path in MODEL_ROUTES:
        expected = "ErrorAnthropic" if path == "/v1/messages" else "ErrorOpenAI"
        for status in ("400", "413", "429", "431", "502", "503", "504"):
            assert error_schema(path, status) == expected, (path, status)


def conforms(payload: dict[str, Any], schema: str) -> None:
    """The required keys of the documented error schema (all the shape there is)."""
    spec = SPEC["components"]["schemas"][schema]
    assert set(spec["required"]) <= set(payload)
    inner = spec["properties"]["error"]
    assert set(inner["required"]) <= set(payload["error"])
    assert payload["error"]["message"]


async def test_examples_are_served_and_errors_have_the_documented_shape(
    make_sidecar: SidecarFactory,
) -> None:
    async with make_sidecar() as sc, aiohttp.ClientSession() as session:
        root = sc.base_url.removesuffix("/v1")
        for path in MODEL_ROUTES:
            content = SPEC["paths"][path]["post"]["requestBody"]["content"]
            example = content["application/json"]["example"]
            async with session.post(root + path, json=example) as response:
                assert response.status == 200, (path, await response.text())
                assert "X-Aegis-Request-Id" in response.headers
            broken = {**example, BROKEN[path]: {"a": 5}}
            async with session.post(root + path, json=broken) as response:
                assert response.status == 400, path
                conforms(await response.json(), error_schema(path, "400"))
        for path in ("/v1/models", "/healthz", "/readyz"):
            async with session.get(root + path) as response:
                assert response.status == 200, path
