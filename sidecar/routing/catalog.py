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
    declared = [(spec.name, spec.models, list(spec.pricing)) for spec in config.providers]
    if config.rollout is not None:  # the candidate arm's replacement models are declared too
        declared += [(p, m, []) for p, m in config.rollout.candidate.provider_models.items()]
    for provider, models, priced in declared:
        names = [models.default, *models.vision, *priced]
        if models.embedding:
            names.append(models.embedding)
        for name in dict.fromkeys(names):
            if provider not in owners.setdefault(name, []):
                owners[name].append(provider)
    index = ConfigIndex(
        providers={p.name: p for p in config.providers},
        locals=tuple(p.name for p in config.providers if p.is_local),
        local_set=frozenset(p.name for p in config.providers if p.is_local),
        local_only=frozenset(config.privacy.local_only),
        owners={k: tuple(v) for k, v in owners.items()},
        budgeted=frozenset(p.name for p in config.providers if config.budgets_for(p.name)),
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
    """``None`` for automatic routing, ``(provider, model)`` when pinned, else a refusal.

    A pinned ``provider/model`` must be one the route declares for that provider (its
    models, vision and embedding models, priced models, the rollout candidate's): any
    other is a 404, so a client cannot reach models the platform did not choose (nor
    grow the metrics' model labels without bound)."""
    if model.lower() in AUTO_MODELS:
        return None
    index = config_index(config)
    provider, slash, rest = model.partition("/")
    if slash and rest and provider in index.providers:
        if provider in index.owners.get(rest, ()):
            return provider, rest
        return ModelNotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
        )
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
