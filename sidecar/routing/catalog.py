"""Per-config lookups for routing, and the model names a client may ask for.

A config is immutable, so its index (providers by name, local providers, which
providers configure a model name, budgeted providers) is built once per config
object and reused by every request routed under it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..contract import ProviderSpec, SidecarConfig
from ..errors import AegisError, BadRequest, ModelNotFound

AUTO_MODELS = frozenset({"", "auto", "aegis"})


@dataclass(frozen=True, slots=True)
class ConfigIndex:
    """Per-config lookups, built once per config object (configs are immutable)."""

    providers: dict[str, ProviderSpec]
    locals: tuple[str, ...]  # config order
    local_set: frozenset[str]  # is_local is a computed property: look it up once
    local_only: frozenset[str]  # data classes
    owners: dict[str, tuple[str, ...]]  # model name -> providers that configure it
    budgeted: frozenset[str]


_INDEXES: dict[int, tuple[SidecarConfig, ConfigIndex]] = {}


def config_index(config: SidecarConfig) -> ConfigIndex:
    """The lookups of ``config``, built on first use and cached per config object."""
    hit = _INDEXES.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    owners: dict[str, list[str]] = {}
    for spec in config.providers:
        models = spec.models
        names = [models.default, *models.vision, *spec.pricing]
        if models.embedding:
            names.append(models.embedding)
        for name in dict.fromkeys(names):
            owners.setdefault(name, []).append(spec.name)
    index = ConfigIndex(
        providers={p.name: p for p in config.providers},
        locals=tuple(p.name for p in config.providers if p.is_local),
        local_set=frozenset(p.name for p in config.providers if p.is_local),
        local_only=frozenset(config.privacy.local_only),
        owners={k: tuple(v) for k, v in owners.items()},
        budgeted=frozenset(b.provider for b in config.budgets),
    )
    if len(_INDEXES) >= 8:  # old configs after hot reloads; the cache holds them alive
        _INDEXES.clear()
    _INDEXES[id(config)] = (config, index)
    return index


def model_catalog(config: SidecarConfig) -> list[str]:
    """The model ids a client may ask for: ``auto``, then ``<provider>/<model>`` for
    every configured model, then bare names configured on exactly one provider."""
    index = config_index(config)
    qualified = [f"{p}/{m}" for m, providers in index.owners.items() for p in providers]
    bare = [m for m, providers in index.owners.items() if len(providers) == 1]
    return ["auto", *qualified, *bare]


def resolve_model(model: str, config: SidecarConfig) -> tuple[str, str] | AegisError | None:
    """``None`` for automatic routing, ``(provider, model)`` when pinned, else a refusal."""
    if model.lower() in AUTO_MODELS:
        return None
    index = config_index(config)
    provider, slash, rest = model.partition("/")
    if slash and rest and provider in index.providers:
        return provider, rest
    owners = index.owners.get(model, ())
    if len(owners) == 1:
        return owners[0], model
    if owners:
        choices = ", ".join(f"'{p}/{model}'" for p in owners)
        return BadRequest(
            f"The model `{model}` is served by several providers; use one of {choices}.",
            code="model_ambiguous",
            param="model",
        )
    return ModelNotFound(
        f"The model `{model}` does not exist or you do not have access to it.", param="model"
    )
