"""``rateLimits`` in the contract: on the sidecar config, on budgets, in the rendered route."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aegis.operator.controllers.render import parse_route_spec, render_route
from aegis.sidecar.contract import ConfigError, RateLimitSpec, RateUnit, SidecarConfig, decode
from aegis.sidecar.contract.schema import SidecarConfig as SidecarConfigSchema

BASE = {
    "providers": [{"name": "openai", "type": "openai", "models": {"default": "gpt-4o-mini"}}],
    "default": {"provider": "openai"},
    "privacy": {"localOnly": []},
}


def test_route_and_budget_limits_parse() -> None:
    config = decode(
        SidecarConfig,
        {
            **BASE,
            "rateLimits": {"requestsPerMinute": 600},
            "budgets": [
                {
                    "name": "team",
                    "provider": "openai",
                    "limitUSD": "10",
                    "rateLimits": {"tokensPerMinute": 90000},
                }
            ],
        },
    )
    assert config.rate_limits == RateLimitSpec(requests_per_minute=600)
    assert config.rate_limits.limit(RateUnit.TOKENS) is None
    budget_limits = config.budgets[0].rate_limits
    assert budget_limits is not None and budget_limits.limit(RateUnit.TOKENS) == 90000


@pytest.mark.parametrize(
    ("limits", "schema_message", "sidecar_message"),
    [
        ({}, *["rateLimits needs requestsPerMinute, tokensPerMinute or both"] * 2),
        ({"requestsPerMinute": 0}, "greater than or equal to 1", r"requestsPerMinute: .* >= 1"),
        ({"tokensPerMinute": -5}, "greater than or equal to 1", r"tokensPerMinute: .* >= 1"),
        (
            {"requestsPerMinute": 10, "burst": 3},
            "Extra inputs are not permitted",
            "rateLimits: Object contains unknown field `burst`",
        ),
    ],
)
def test_bad_limits_are_refused_naming_the_problem(
    limits: dict[str, int], schema_message: str, sidecar_message: str
) -> None:
    document = {**BASE, "rateLimits": limits}
    with pytest.raises(ValidationError, match=schema_message):
        SidecarConfigSchema.model_validate(document)
    with pytest.raises(ConfigError, match=sidecar_message):
        decode(SidecarConfig, document)


def test_the_operator_renders_the_route_limits() -> None:
    spec = {
        "providers": [{"name": "openai", "type": "openai", "models": {"default": "gpt-4o-mini"}}],
        "default": {"provider": "openai"},
        "privacy": {"localOnly": []},
        "rateLimits": {"requestsPerMinute": 600, "tokensPerMinute": 100000},
    }
    rendered = render_route("team-a", "chat", parse_route_spec(spec))
    limits = rendered.config.rate_limits
    assert limits is not None
    assert (limits.requests_per_minute, limits.tokens_per_minute) == (600, 100000)
    assert "rateLimits:\n  requestsPerMinute: 600\n  tokensPerMinute: 100000\n" in rendered.text
