"""Settings from flags and AEGIS_INJECTOR_* variables (what Helm values feed)."""

from __future__ import annotations

import argparse
import datetime

import pytest

from aegis.operator.cli import build_parser
from aegis.operator.injector.settings import (
    InjectorSettings,
    from_args,
    native_sidecar_supported,
    parse_duration,
)


def settings(*argv: str) -> InjectorSettings:
    return from_args(build_parser().parse_args(["injector", *argv]))


def test_defaults() -> None:
    s = settings()
    assert (s.server.port, s.server.tls_mode, s.server.webhook_config) == (
        8443,
        "secret",
        "aegis-injector",
    )
    assert s.sidecar.image.startswith("ghcr.io/aegis-llm/aegis:")
    assert s.sidecar.resources["limits"] == {"memory": "256Mi"}
    assert s.server.never_injected == {"kube-system", "aegis-system"}
    assert "aegis-injector.aegis-system.svc" in s.server.dns_names


def test_environment_feeds_every_setting_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "llm-platform")
    monkeypatch.setenv("AEGIS_INJECTOR_IMAGE", "registry.example/aegis:9")
    monkeypatch.setenv("AEGIS_INJECTOR_SIDECAR_RESOURCES", '{"requests": {"cpu": "10m"}}')
    monkeypatch.setenv("AEGIS_INJECTOR_LEDGER_SECRET", "")
    monkeypatch.setenv("AEGIS_INJECTOR_LEAF_VALIDITY", "7d")
    monkeypatch.setenv("AEGIS_INJECTOR_EXTRA_SANS", "127.0.0.1,injector.local")
    monkeypatch.setenv("AEGIS_INJECTOR_NATIVE_SIDECAR", "never")
    s = settings("--image", "registry.example/aegis:10")
    assert s.server.namespace == "llm-platform"
    assert s.sidecar.image == "registry.example/aegis:10"
    assert s.sidecar.resources == {"requests": {"cpu": "10m"}}
    assert s.sidecar.ledger_secret_name is None
    assert s.server.leaf_validity == datetime.timedelta(days=7)
    assert s.server.dns_names[-2:] == ("127.0.0.1", "injector.local")
    assert s.sidecar.native == "never"


def test_files_mode_needs_a_directory() -> None:
    with pytest.raises(ValueError, match="--cert-dir"):
        settings("--tls-mode", "files")
    assert settings("--tls-mode", "files", "--cert-dir", "/tls").server.cert_dir is not None


def test_bad_values_are_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        settings("--sidecar-resources", "[1]")
    assert "expected a JSON object" in capsys.readouterr().err


def test_parse_duration() -> None:
    assert parse_duration("1h30m") == datetime.timedelta(minutes=90)
    assert parse_duration("90s") == datetime.timedelta(seconds=90)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("5 days")


@pytest.mark.parametrize(
    ("mode", "version", "native"),
    [
        ("auto", {"major": "1", "minor": "34"}, True),
        ("auto", {"major": "1", "minor": "29+"}, True),
        ("auto", {"major": "1", "minor": "28"}, False),
        ("auto", {}, False),
        ("always", {"major": "1", "minor": "27"}, True),
        ("never", {"major": "1", "minor": "34"}, False),
    ],
)
def test_native_sidecar_detection(mode: str, version: dict[str, str], native: bool) -> None:
    assert native_sidecar_supported(mode, version) is native  # type: ignore[arg-type]


def test_a_service_link_variable_breaks_no_other_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kubelet sets AEGIS_INJECTOR_PORT=tcp://… for a Service named aegis-injector."""
    monkeypatch.setenv("AEGIS_INJECTOR_PORT", "tcp://10.96.0.12:443")
    monkeypatch.setenv("AEGIS_INJECTOR_METRICS_PORT", "tcp://10.96.0.13:9090")
    args = build_parser().parse_args(["sidecar", "--config", "/etc/aegis"])
    assert args.command == "sidecar"
    with pytest.raises(SystemExit):
        settings()
    message = capsys.readouterr().err
    assert "service-link variable" in message and "enableServiceLinks: false" in message
    assert settings("--port", "9443", "--metrics-port", "0").server.port == 9443
