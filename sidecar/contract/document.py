"""The config document: read, parse and validate ``config.yaml``, and its content hash.

The operator hashes the document it renders with :func:`content_hash`, and the
sidecar reports the hash of the document it serves, so both sides name one
version of a route's config the same way. :func:`load_config` reads it from a
file or from a mounted ConfigMap directory (the file inside it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from .config import SidecarConfig


class ConfigError(Exception):
    """A config file that cannot be used; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: SidecarConfig
    hash: str
    source: Path


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the field path as written in YAML."""
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "(document)"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def parse_config(raw: bytes, source: Path) -> LoadedConfig:
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping")
    try:
        config = SidecarConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None
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
