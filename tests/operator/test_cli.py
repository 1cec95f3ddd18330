"""``aegis operator`` command line."""

from __future__ import annotations

import pytest

from aegis.operator.cli import build_parser


def test_operator_defaults() -> None:
    args = build_parser().parse_args(["operator"])
    assert (args.namespace, args.all_namespaces) == ([], False)  # every namespace
    assert (args.health_port, args.metrics_port) == (8080, 9090)
    assert (args.budget_interval, args.resync_interval) == (30.0, 300.0)
    assert args.ledger_dsn_env == "AEGIS_LEDGER_DSN"


def test_operator_namespaces_and_intervals() -> None:
    args = build_parser().parse_args(
        ["operator", "-n", "team-a", "-n", "team-b", "--budget-interval", "0.5"]
    )
    assert args.namespace == ["team-a", "team-b"] and args.budget_interval == 0.5


@pytest.mark.parametrize(
    "argv",
    [
        ["operator", "-n", "a", "--all-namespaces"],
        ["operator", "--budget-interval", "0"],
        ["operator", "--resync-interval", "-1"],
    ],
)
def test_operator_refuses_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_version_names_the_installed_release(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"aegis {metadata.version('aegis-llm')}"


def test_fake_upstream_binds_where_asked() -> None:
    args = build_parser().parse_args(["fake-upstream", "--kind", "openai"])
    assert args.host == "127.0.0.1"
    args = build_parser().parse_args(["fake-upstream", "--kind", "openai", "--host", "0.0.0.0"])
    assert args.host == "0.0.0.0"
