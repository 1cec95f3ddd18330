"""The two representations of the config document agree.

The operator validates with the schema (pydantic, ``contract/schema/``); a sidecar
decodes the same document into the generated runtime types (msgspec,
``contract/structs.py``). The committed runtime types are what the schema generates,
and for every document, valid or not, both accept it or both refuse it, and what
they accept reads back as the same document.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aegis.sidecar.contract import ConfigError, SidecarConfig, config_of
from aegis.sidecar.contract.schema import SidecarConfig as SidecarConfigSchema
from aegis.sidecar.contract.schema.generate import TARGET, render

EXAMPLE = Path(__file__).resolve().parents[2] / "sidecar" / "examples" / "standalone.yaml"

# Every model of the document appears at least once, most optional fields set.
FULL: dict[str, Any] = {
    "apiVersion": "aegis.io/v1alpha1",
    "kind": "SidecarConfig",
    "identity": {"route": "chat", "namespace": "team-a"},
    "providers": [
        {
            "name": "local",
            "type": "ollama",
            "baseURL": "http://127.0.0.1:11434",
            "models": {"default": "gemma3:4b", "vision": ["qwen2.5vl:7b"], "embedding": "bge-m3"},
        },
        {
            "name": "openai",
            "type": "openai",
            "locality": "cloud",
            "apiKeyEnv": "OPENAI_KEY",
            "models": {"default": "gpt-4o-mini"},
            "pricing": {"gpt-4o-mini": {"inputPer1M": "0.15", "outputPer1M": 0.6}},
            "timeoutSeconds": 30,
            "connectTimeoutSeconds": 2.5,
            "maxRetries": 2,
            "circuitBreaker": {"failureThreshold": 3, "openSeconds": 10},
            "defaultMaxTokens": 1024,
        },
        {
            "name": "sdk",
            "type": "any-llm",
            "sdkProvider": "mistral",
            "models": {"default": "mistral-small"},
            "visionHighResolution": True,
        },
    ],
    "rules": [
        {
            "name": "sensitive",
            "match": {"dataClass": ["pii"], "quality": ["high"], "complexity": ["low"]},
            "to": {"provider": "local"},
        },
        {
            "name": "batch",
            "match": {"minBatchSize": 2, "maxBatchSize": 64, "vision": False},
            "to": {"provider": "openai", "model": "gpt-4o-mini"},
        },
    ],
    "default": {"provider": "openai"},
    "fallback": ["local"],
    "privacy": {
        "classes": ["public", "internal", "pii", "secret"],
        "localOnly": ["pii", "secret"],
        "defaultClass": "internal",
        "detect": True,
        "detectedClass": "pii",
        "patterns": [{"name": "ticket", "regex": "TCK-[0-9]{6}", "dataClass": "secret"}],
        "mask": ["pii"],
    },
    "rollout": {
        "candidate": {
            "rules": [],
            "default": {"provider": "local"},
            "fallback": ["openai"],
            "providerModels": {"local": {"default": "gemma3:12b"}},
        },
        "weight": 10,
        "step": 1,
        "salt": "abc",
        "stickiness": {"header": "X-User"},
    },
    "budgets": [
        {
            "name": "team",
            "providers": ["openai"],
            "models": ["gpt-4o*"],
            "dataClasses": ["internal"],
            "serviceAccounts": ["web"],
            "limitUSD": "12.500000",
            "period": "Weekly",
            "timezone": "Europe/Berlin",
            "onExceeded": "Reject",
            "alertThresholds": [50, 100],
            "rateLimits": {"tokensPerMinute": 90000},
        },
        {"name": "all", "scope": "Cluster", "limitUSD": 1000, "onExceeded": "Notify"},
    ],
    "rateLimits": {"requestsPerMinute": 600},
    "ledger": {"url": "sqlite:///ledger.db", "urlEnv": "LEDGER_DSN"},
    "listen": {
        "host": "127.0.0.1",
        "port": 8787,
        "metricsPort": 0,
        "metricsHost": "0.0.0.0",
        "maxBodyBytes": 1048576,
        "limits": {"maxJsonDepth": 16, "requestTimeoutSeconds": 30},
    },
}

# Values a mutation puts anywhere: each field's boundaries, wrong types, money that
# is just too precise or too large, names a rule refers to, and the like.
ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    1,
    -1,
    63,
    100,
    101,
    65536,
    0.5,
    2.0,
    "",
    "1",
    "5",
    "1e3",
    " 7 ",
    "yes",
    10**20,
    "1.0000001",
    "1.5000000",
    "999999999999.999999",
    "1000000000000",
    "NaN",
    "-0.000001",
    "x" * 64,
    "x" * 129,
    "Local",
    "local",
    "openai",
    "nope",
    "pii",
    "Cluster",
    "Mars/Olympus",
    "UTC",
    "localhost",
    "10.0.0.1",
    "x*",
    "(a)\\1",
    "https://example.com",
    [],
    ["local", "local"],
    ["pii"],
    {},
    {"zzz": 1},
]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index of a document, outermost first."""
    if not isinstance(node, dict | list):
        return []
    found: list[tuple[Any, ...]] = []
    for key, value in node.items() if isinstance(node, dict) else enumerate(node):
        found.append((*prefix, key))
        found += paths(value, (*prefix, key))
    return found


def at(document: Any, path: tuple[Any, ...]) -> Any:
    """The dict or list ``path`` leads to inside ``document``."""
    node = document
    for key in path:
        node = node[key]
    return node


def verdicts(document: Any) -> tuple[Any, Any]:
    """Each side's reading of ``document``: its wire form, or the error's text."""
    try:
        schema: Any = SidecarConfigSchema.model_validate(document, by_name=False).model_dump(
            mode="json", by_alias=True
        )
    except ValidationError as exc:
        schema = exc
    try:
        runtime: Any = msgspec.to_builtins(config_of(document))
    except ConfigError as exc:
        runtime = exc
    return schema, runtime


def assert_agree(document: Any) -> None:
    """What the sidecar accepts, the schema accepts, read the same; what the schema
    accepts, the sidecar accepts as the operator renders it (the schema's own
    output) and reads the same. The one leeway: the schema's lax mode converts a
    value of the wrong type (``"5"`` or ``true`` to ``5``, ``"yes"`` to ``true``) that
    the sidecar refuses, as the API server does; the operator never renders one."""
    schema, runtime = verdicts(document)
    if not isinstance(runtime, ConfigError):
        assert not isinstance(schema, ValidationError), f"only the schema refuses: {schema}"
        assert schema == runtime
    elif not isinstance(schema, ValidationError):
        rendered = verdicts(schema)
        assert rendered == (schema, schema), f"the sidecar refuses the schema's {rendered[1]}"
        where = str(runtime).split(": ", 1)[0]
        assert where in _coercions(document, schema), f"only the sidecar refuses: {runtime}"


def _coercions(document: Any, rendered: Any, where: str = "") -> set[str]:
    """The paths (``providers.1.port``) where the schema converted a value of
    ``document`` to another type: a string or a bool to something else, a number to a
    bool or to an integer (its lax mode)."""
    if isinstance(document, dict) and isinstance(rendered, dict):
        pairs: Any = ((k, v, rendered.get(k)) for k, v in document.items())
    elif isinstance(document, list) and isinstance(rendered, list):
        pairs = ((i, a, b) for i, (a, b) in enumerate(zip(document, rendered, strict=False)))
    else:
        if isinstance(document, str | bool):
            changed = type(rendered) is not type(document)
        elif isinstance(document, float):
            changed = isinstance(rendered, bool | int)
        else:
            changed = isinstance(document, int) and isinstance(rendered, bool)
        return {where} if changed else set()
    found: set[str] = set()
    for key, value, read in pairs:
        found |= _coercions(value, read, f"{where}.{key}" if where else str(key))
    return found


def test_the_runtime_types_are_generated_from_the_schema() -> None:
    assert TARGET.read_text() == render(), (
        "sidecar/contract/structs.py is stale: run "
        "`.venv/bin/python -m aegis.sidecar.contract.schema.generate`"
    )


@pytest.mark.parametrize("name", ["full", "example"])
def test_both_read_a_valid_document_the_same(name: str) -> None:
    document = FULL if name == "full" else yaml.safe_load(EXAMPLE.read_text())
    schema, runtime = verdicts(document)
    assert not isinstance(schema, Exception) and not isinstance(runtime, Exception)
    assert schema == runtime
    assert isinstance(config_of(document), SidecarConfig)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_both_accept_and_refuse_the_same_documents(data: st.DataObject) -> None:
    document = copy.deepcopy(FULL)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(paths(document)))
        *parents, last = where
        node = at(document, tuple(parents))
        action = data.draw(st.sampled_from(["set", "drop", "extra"]))
        if action == "drop":
            del node[last]
        elif action == "extra" and isinstance(node, dict):
            node["unknownField"] = 1
        else:
            node[last] = data.draw(st.sampled_from(ODD_VALUES))
        if not paths(document):
            break
    assert_agree(document)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("providers", 0, "name"), "Local"),  # a pattern
        (("budgets", 0, "limitUSD"), "1.0000001"),  # money's places
        (("budgets", 0, "limitUSD"), "1000000000000"),  # money's whole digits
        (("budgets", 0, "limitUSD"), "-1"),  # money's sign
        (("budgets", 0, "timezone"), "Mars/Olympus"),  # a field check
        (("budgets", 1, "namespace"), "team-a"),  # a cross-field check
        (("rules", 0, "to", "provider"), "nope"),  # a reference
        (("listen", "host"), "0.0.0.0"),  # loopback only
        (("privacy", "patterns", 0, "regex"), "x*"),  # matches the empty string
        (("providers", 0, "models", "vision"), "qwen2.5vl:7b"),  # a list, not one name
        (("providers", 0, "base_url"), "http://x"),  # the wire name only
        (("rollout", "step"), "1e3"),  # not an integer for either
    ],
)
def test_both_refuse_each_kind_of_mistake(path: tuple[Any, ...], value: Any) -> None:
    document = copy.deepcopy(FULL)
    at(document, path[:-1])[path[-1]] = value
    schema, runtime = verdicts(document)
    assert isinstance(schema, ValidationError), schema
    assert isinstance(runtime, ConfigError), runtime


def test_the_sidecar_reads_types_as_the_api_server_does() -> None:
    """A quoted number is refused, naming the field, where the schema's lax mode reads
    it; a quoted amount of money is a decimal string, read the same by both."""
    document = copy.deepcopy(FULL)
    document["listen"]["port"] = "8787"
    schema, runtime = verdicts(document)
    assert schema["listen"]["port"] == 8787
    assert isinstance(runtime, ConfigError)
    assert str(runtime) == "listen.port: Expected `int`, got `str`"
    document["listen"]["port"] = 8787
    document["budgets"][1]["limitUSD"] = "1000.50"
    schema, runtime = verdicts(document)
    assert schema == runtime and runtime["budgets"][1]["limitUSD"] == "1000.50"


@pytest.mark.parametrize(
    ("where", "entry", "message"),
    [
        (
            ("providers", 1, "pricing"),
            ("gpt-4.1", {"inputPer1M": "1", "outputPer1M": "x"}),
            "providers.1.pricing.gpt-4.1.outputPer1M: Invalid decimal string",
        ),
        (
            ("rollout", "candidate", "providerModels"),
            ("openai", {"default": ""}),
            "rollout.candidate.providerModels.openai.default: Expected `str` of length >= 1",
        ),
    ],
)
def test_an_error_inside_a_map_names_its_key(
    where: tuple[Any, ...], entry: tuple[str, Any], message: str
) -> None:
    """msgspec says ``pricing[...]``; the sidecar finds which key (as the schema says)."""
    document = copy.deepcopy(FULL)
    at(document, where)[entry[0]] = entry[1]
    _, runtime = verdicts(document)
    assert str(runtime) == message
