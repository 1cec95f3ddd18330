"""The chart's PgBouncer option: off by default; on, a transaction-mode PgBouncer whose
Service the tenant DSNs point at, and a clear refusal without its auth Secret."""

from __future__ import annotations

import configparser
import os
from typing import Any

import pytest

from tests.helm import sync
from tests.helm.chart import Helm, one

ON = {"pgbouncer": {"enabled": True, "auth": {"existingSecret": "pgbouncer-auth"}}}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        binary = sync.helm_binary()
    except Exception as error:  # the builder raises BuildError; any failure means no helm
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"helm unavailable: {error}", pytrace=False)
        pytest.skip(f"helm unavailable: {error}")
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


def tenant_url(docs: list[dict[str, Any]]) -> str | None:
    operator = one(docs, "Deployment", "-operator")
    [container] = operator["spec"]["template"]["spec"]["containers"]
    found = [e.get("value") for e in container["env"] if e["name"] == "AEGIS_LEDGER_TENANT_URL"]
    return found[0] if found else None


def test_off_by_default(helm: Helm) -> None:
    docs = helm.template()
    assert not [d for d in docs if d["metadata"]["name"].endswith("-pgbouncer")]
    assert tenant_url(docs) is None


def test_on_it_pools_by_transaction_and_the_tenant_dsns_point_at_it(helm: Helm) -> None:
    docs = helm.template(values={**ON, "postgresql": {"enabled": True}})
    config = one(docs, "ConfigMap", "-pgbouncer")["data"]["pgbouncer.ini"]
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(config)
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    assert ini["pgbouncer"]["auth_user"] == "pgbouncer"
    assert ini["databases"]["*"] == "host=aegis-postgresql.aegis-system.svc port=5432"
    service = one(docs, "Service", "-pgbouncer")
    assert service["spec"]["ports"][0]["port"] == 6432
    deployment = one(docs, "Deployment", "-pgbouncer")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    [auth] = [v for v in pod["volumes"] if v["name"] == "auth"]
    assert auth["secret"]["secretName"] == "pgbouncer-auth"
    assert tenant_url(docs) == "postgresql://aegis-pgbouncer.aegis-system.svc:6432/aegis"


def test_an_explicit_tenant_url_wins_and_an_external_server_is_named(helm: Helm) -> None:
    values = {
        "pgbouncer": {**ON["pgbouncer"], "server": {"host": "db.example", "port": 5433}},
        "ledger": {"tenants": {"url": "postgresql://pooler.example:6432/ledger"}},
    }
    docs = helm.template(values=values)
    config = one(docs, "ConfigMap", "-pgbouncer")["data"]["pgbouncer.ini"]
    assert "* = host=db.example port=5433" in config
    assert tenant_url(docs) == "postgresql://pooler.example:6432/ledger"


def test_without_its_auth_secret_the_chart_says_what_is_missing(helm: Helm) -> None:
    done = helm.run(
        "template", "aegis", str(sync.CHART), "--set", "pgbouncer.enabled=true", check=False
    )
    assert done.returncode != 0
    assert "pgbouncer.auth.existingSecret" in done.stderr


def test_the_values_schema_refuses_unknown_pgbouncer_keys(helm: Helm) -> None:
    done = helm.run(
        "template", "aegis", str(sync.CHART), "--set", "pgbouncer.poolsize=5", check=False
    )
    assert done.returncode != 0
    assert "poolsize" in done.stderr
