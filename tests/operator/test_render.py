"""Rendering an LLMRoute (+ budgets) into the sidecar config, without a cluster."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from aegis.operator.api.naming import key_env_var
from aegis.operator.api.specs import LLMBudgetSpec
from aegis.operator.api.status import RouteRolloutStatus
from aegis.operator.controllers.budget_plan import applied_budget
from aegis.operator.controllers.render import (
    AppliedBudget,
    RenderError,
    parse_route_spec,
    render_route,
)
from aegis.operator.kube.conditions import Wanted, merge
from aegis.operator.rollout.state import candidate_hash, rollout_state
from aegis.sidecar.contract import parse_config
from aegis.sidecar.contract.money import cents

EXAMPLES = Path(__file__).resolve().parents[2] / "crds" / "examples"
NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def example(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def origin_spec() -> dict[str, Any]:
    spec: dict[str, Any] = example("rag-api-route.yaml")[0]["spec"]
    return copy.deepcopy(spec)


def budgets(namespace: str = "team") -> list[AppliedBudget]:
    views = []
    for doc in example("budgets.yaml"):
        view = applied_budget(namespace, doc["metadata"]["name"], doc["spec"], None)
        assert view is not None
        views.append(view)
    return views


def test_origin_example_renders_to_a_config_the_sidecar_loads() -> None:
    rendered = render_route("team", "rag-api", parse_route_spec(origin_spec()), budgets())
    loaded = parse_config(rendered.text.encode(), Path("config.yaml"))
    wire = rendered.config.model_dump(mode="json", by_alias=True)
    assert msgspec.to_builtins(loaded.config) == wire  # the same document on both sides
    assert loaded.hash == rendered.hash  # the sidecar reports the operator's hash
    config = rendered.config
    assert config.identity.route == "rag-api" and config.identity.namespace == "team"
    keys = {p.name: p.api_key_env for p in config.providers}
    assert keys == {"local": None, "dashscope": "AEGIS_KEY_DASHSCOPE", "openai": "AEGIS_KEY_OPENAI"}
    assert config.ledger.url_env == "AEGIS_LEDGER_DSN"
    assert {(b.name, b.provider, str(b.limit_usd)) for b in config.budgets} == {
        ("dashscope-monthly", "dashscope", "120"),
        ("openai-monthly", "openai", "80"),
    }
    assert [r.name for r in config.rules] == ["sensitive", "critical", "batch"]
    assert "replace-me" not in rendered.text and "apiKeySecretRef" not in rendered.text
    assert {(s.secret, s.key) for s in rendered.secrets} == {
        ("dashscope", "apiKey"),
        ("openai", "apiKey"),
    }


def test_rendering_is_deterministic_and_the_hash_follows_content() -> None:
    spec = parse_route_spec(origin_spec())
    first = render_route("team", "rag-api", spec, budgets())
    again = render_route("team", "rag-api", spec, list(reversed(budgets())))
    assert first.text == again.text and first.hash == again.hash
    changed = origin_spec()
    changed["default"]["model"] = "gemma3:12b"
    other = render_route("team", "rag-api", parse_route_spec(changed), budgets())
    assert other.hash != first.hash


def test_key_env_var_names() -> None:
    assert key_env_var("openai") == "AEGIS_KEY_OPENAI"
    assert key_env_var("dash-scope-2") == "AEGIS_KEY_DASH_SCOPE_2"


def test_budget_scope_provider_routes_and_namespaces() -> None:
    spec = parse_route_spec(origin_spec())
    other_ns = budgets("elsewhere")
    assert render_route("team", "rag-api", spec, other_ns).config.budgets == []
    chat_only = {"provider": "openai", "limitUSD": 5, "routes": ["chat"]}
    only_chat = applied_budget("team", "b", chat_only, None)
    assert only_chat is not None
    assert render_route("team", "rag-api", spec, [only_chat]).config.budgets == []
    unknown = applied_budget("team", "b", {"provider": "anthropic", "limitUSD": 5}, None)
    assert unknown is not None
    assert render_route("team", "rag-api", spec, [unknown]).config.budgets == []
    # namespaces widen the scope only for budgets in the platform namespace
    wide = {"provider": "openai", "limitUSD": 5, "namespaces": ["*"]}
    platform = applied_budget("aegis-system", "global", wide, "aegis-system")
    tenant = applied_budget("other", "global", wide, "aegis-system")
    assert platform is not None and tenant is not None
    assert platform.scope == {"*"} and tenant.scope == {"other"}
    rendered = render_route("team", "rag-api", spec, [platform])
    assert [b.name for b in rendered.config.budgets] == ["global"]


def test_invalid_budget_spec_applies_nowhere() -> None:
    mars = {"provider": "openai", "limitUSD": 5, "timezone": "Mars/Base"}
    assert applied_budget("team", "b", mars, None) is None


def test_namesakes_from_two_namespaces_are_two_budgets() -> None:
    """Sidecars key budgets by (scope, namespace, name): a platform budget and the
    route's own of one name both apply, each with its own money."""
    spec = parse_route_spec(origin_spec())
    wide = {"provider": "openai", "limitUSD": 5, "namespaces": ["team"]}
    a = applied_budget("aegis-system", "openai-monthly", wide, "aegis-system")
    assert a is not None
    rendered = render_route("team", "rag-api", spec, [a, *budgets()])
    keys = [str(b.key("team")) for b in rendered.config.budgets if b.name == "openai-monthly"]
    assert sorted(keys) == [
        "Namespace/aegis-system/openai-monthly", "Namespace/team/openai-monthly",
    ]  # fmt: skip


def test_budgets_of_one_provider_may_have_their_own_time_zones() -> None:
    spec = parse_route_spec(origin_spec())
    in_berlin = {"provider": "openai", "limitUSD": 5, "timezone": "Europe/Berlin"}
    berlin = applied_budget("team", "openai-berlin", in_berlin, None)
    assert berlin is not None
    rendered = render_route("team", "rag-api", spec, [berlin, *budgets()])
    zones = {b.name: b.timezone for b in rendered.config.budgets}
    assert zones["openai-berlin"] == "Europe/Berlin" and zones["openai-monthly"] == "UTC"


def test_invalid_spec_names_the_field() -> None:
    spec = origin_spec()
    spec["privacy"] = {"classes": ["public", "pii"], "localOnly": ["pii"]}  # defaultClass internal
    with pytest.raises(RenderError) as caught:
        render_route("team", "rag-api", parse_route_spec(spec))
    assert caught.value.reason == "InvalidSpec"
    assert "privacy.defaultClass" in caught.value.message
    bad = origin_spec()
    bad["providers"][0]["baseURL"] = "ftp://x"
    with pytest.raises(RenderError) as caught:
        parse_route_spec(bad)
    assert "spec.providers[0].baseURL" in caught.value.message


def rollout_spec(**changes: Any) -> Any:
    spec: dict[str, Any] = example("rollout.yaml")[0]["spec"]
    spec["rollout"].update(changes)
    parsed = parse_route_spec(spec)
    assert parsed.rollout is not None
    return parsed


def test_rollout_renders_weight_step_salt_and_stickiness() -> None:
    spec = rollout_spec()
    assert spec.rollout is not None
    state = rollout_state(spec.rollout, None, NOW)
    assert (state.phase, state.step, state.weight) == ("Progressing", 0, 10)
    rendered = render_route("team", "chat-api", spec, budgets(), state)
    rollout = rendered.config.rollout
    assert rollout is not None
    assert (rollout.weight, rollout.step) == (10, 0)
    assert rollout.salt == state.candidate_hash == candidate_hash(spec.rollout.candidate)
    assert rollout.stickiness.header == "X-Aegis-User"
    assert [r.name for r in rollout.candidate.rules][-1] == "batch"


def test_rollout_state_follows_controls() -> None:
    plan = rollout_spec().rollout
    started = rollout_state(plan, None, NOW)
    later = NOW + timedelta(hours=1)
    advanced = started.model_copy(update={"step": 2, "weight": 50})  # as the controller would
    assert rollout_state(plan, advanced, later) == advanced  # nothing to change
    paused = rollout_state(rollout_spec(paused=True).rollout, advanced, later)
    assert (paused.phase, paused.weight) == ("Paused", 50)
    aborted = rollout_state(rollout_spec(abort=True).rollout, advanced, later)
    assert (aborted.phase, aborted.weight, aborted.last_transition_time) == ("Aborted", 0, later)
    resumed = rollout_state(plan, aborted, later)
    assert (resumed.phase, resumed.weight, resumed.step) == ("Progressing", 50, 2)
    fewer_steps = rollout_spec(steps=[20, 100]).rollout
    clamped = rollout_state(fewer_steps, advanced, later)
    assert (clamped.step, clamped.weight) == (1, 100)
    rolled_back = advanced.model_copy(update={"phase": "RolledBack", "weight": 0})
    assert rollout_state(plan, rolled_back, later).weight == 0


def test_new_candidate_starts_over() -> None:
    plan = rollout_spec().rollout
    assert plan is not None
    current = rollout_state(plan, None, NOW).model_copy(update={"step": 3, "weight": 75})
    edited = copy.deepcopy(example("rollout.yaml")[0]["spec"])
    edited["rollout"]["candidate"]["default"] = {"provider": "dashscope"}
    new_plan = parse_route_spec(edited).rollout
    assert new_plan is not None
    fresh = rollout_state(new_plan, current, NOW + timedelta(days=1))
    assert (fresh.step, fresh.weight) == (0, 10)
    assert fresh.candidate_hash != current.candidate_hash
    assert isinstance(fresh, RouteRolloutStatus)


def test_conditions_keep_transition_time_while_status_holds() -> None:
    first = merge([], [Wanted("Ready", "False", "SecretNotFound", "a")], 1, NOW)
    later = NOW + timedelta(minutes=5)
    same = merge(first, [Wanted("Ready", "False", "KeyNotFound", "b")], 2, later)
    assert same[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert (same[0]["reason"], same[0]["observedGeneration"]) == ("KeyNotFound", 2)
    other = {"type": "Other", "status": "True"}
    flipped = merge([*same, other], [Wanted("Ready", "True", "Reconciled")], 2, later)
    assert flipped[0]["lastTransitionTime"] == "2026-11-03T12:05:00Z"
    assert flipped[1] == {"type": "Other", "status": "True"}  # another owner's condition


def test_money_in_status_has_two_decimals() -> None:
    from decimal import Decimal

    assert cents(Decimal("96")) == "96.00"
    assert cents(Decimal("0.005")) == "0.01"
    assert cents(Decimal("0.004999")) == "0.00"
    assert LLMBudgetSpec.model_validate(
        {"name": "b", "provider": "openai", "limitUSD": 0.1}
    ).limit_usd == Decimal("0.1")
