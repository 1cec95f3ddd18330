"""The config document: read, parse and validate ``config.yaml``, and its content hash.

The operator hashes the document it renders with :func:`content_hash`, and the
sidecar reports the hash of the document it serves, so both sides name one
version of a route's config the same way. :func:`load_config` reads it from a
file or from a mounted ConfigMap directory (the file inside it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from .structs import SidecarConfig


class ConfigError(ValueError):
    """A config file that cannot be used; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: SidecarConfig
    hash: str
    source: Path


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


# msgspec's "… - at `$.providers[0].name`": the message, then where.
_LOCATED = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_INDEX = re.compile(r"\[(\d+)\]")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_ANY_KEY = "[...]"  # msgspec's place for "some key of a map"
_KEYS_SEARCHED = 64  # the schema's largest map; a larger one fails on its length anyway


def _formatted(text: str) -> str:
    """msgspec's error as ``path: message``, the path written as the schema's errors
    write it (``providers.0.name``): a field as in YAML, an item by its index."""
    located = _LOCATED.match(text)
    if located is None:
        return f"(document): {text}"
    path = _INDEX.sub(r".\1", located["path"]).lstrip(".")
    return f"{path or '(document)'}: {located['message']}"


def _steps(path: str) -> list[str | int]:
    return [int(i) if i else name for name, i in _STEP.findall(path)]


def _replaced(node: Any, steps: list[str | int], value: Any) -> Any:
    """``node`` with the value at ``steps`` replaced (copies along the way only)."""
    if not steps:
        return value
    head, *rest = steps
    if isinstance(node, list) and isinstance(head, int):
        return [*node[:head], _replaced(node[head], rest, value), *node[head + 1 :]]
    return {**node, head: _replaced(node[head], rest, value)}


def _named_keys(kind: type, document: Any, text: str) -> str:
    """msgspec's error ``text`` with each ``[...]`` replaced by the key of the map entry
    that fails: decoding the document with that map narrowed to one entry at a time
    gives the same error for exactly that entry."""
    while (located := _LOCATED.match(text)) and _ANY_KEY in located["path"]:
        before = located["path"].split(_ANY_KEY, 1)[0]
        steps = _steps(before)
        mapping: Any = document
        try:
            for step in steps:
                mapping = mapping[step]
        except (KeyError, IndexError, TypeError):  # a key with a dot in an outer map
            break
        if not isinstance(mapping, dict) or len(mapping) > _KEYS_SEARCHED:
            break
        for key, value in mapping.items():
            narrowed = _replaced(document, steps, {key: value})
            try:
                msgspec.convert(narrowed, kind, strict=True)
            except msgspec.ValidationError as again:
                if str(again) == text:
                    text = text.replace(f"{before}{_ANY_KEY}", f"{before}.{key}", 1)
                    break
        else:
            break  # an error of the map as a whole: left as msgspec says it
    return text


_T = TypeVar("_T")


def decode(kind: type[_T], document: Any) -> _T:
    """``document`` (as YAML or JSON loads it) as the runtime type ``kind``, validated
    as the schema validates it; ``ConfigError`` names the field. Types are read as the
    API server reads them: a quoted number or ``yes`` for a bool is refused where the
    schema's lax mode would convert it (money may be quoted: it is a decimal string)."""
    try:
        return msgspec.convert(document, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_formatted(_named_keys(kind, document, str(exc)))) from None


def config_of(document: Mapping[str, Any]) -> SidecarConfig:
    """The config a parsed document holds, validated; ``ConfigError`` names the field."""
    return decode(SidecarConfig, document)


def parse_config(raw: bytes, source: Path) -> LoadedConfig:
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping")
    try:
        config = config_of(document)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return LoadedConfig(config=config, hash=content_hash(raw), source=source)


CONFIG_FILE_NAMES = ("config.yaml", "config.yml", "sidecar.yaml")


def resolve_config_file(path: Path) -> Path:
    """The YAML file to read: ``path`` itself, or the config file inside a directory."""
    if not path.is_dir():
        return path
    for name in CONFIG_FILE_NAMES:
        candidate = path / name
        if candidate.is_file():
            return candidate
    yamls = sorted(p for p in path.glob("*.y*ml") if not p.name.startswith("."))
    if len(yamls) == 1:
        return yamls[0]
    raise ConfigError(
        f"{path}: expected one of {', '.join(CONFIG_FILE_NAMES)} in the config directory"
    )


def load_config(path: Path) -> LoadedConfig:
    source = resolve_config_file(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    return parse_config(raw, source)
