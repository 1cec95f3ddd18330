"""The chart's evaluation PostgreSQL hands out no superuser DSN: its init script, run as
the official image runs it (on a real PostgreSQL), makes the ledger's owner and the
operator's read-only and control roles, and the chart's Secret gives each its own DSN,
with which the migration job and the operator do their work."""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aegis.sidecar.ledger.db import create_engine
from tests.controlplane.kube import Kube
from tests.controlplane.postgres import PostgresServer
from tests.helm.cluster import AEGIS, expand
from tests.security.conftest import render

pytestmark = [pytest.mark.kube, pytest.mark.postgres]


def one(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    return found


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


@pytest.fixture
def chart(kube: Kube) -> Iterator[list[dict[str, Any]]]:
    owner = f"aegis_{uuid.uuid4().hex[:8]}"  # roles are global to the server: ours alone
    yield render(kube, "eval", "aegis-system", "postgresql.enabled=true",
                 f"postgresql.username={owner}")  # fmt: skip


def test_the_evaluation_database_gives_out_no_superuser_dsn(
    chart: list[dict[str, Any]], postgres: PostgresServer, tmp_path: Path
) -> None:
    server = one(chart, "StatefulSet", "-postgresql")["spec"]["template"]["spec"]
    (container,) = server["containers"]
    env = {e["name"]: e for e in container["env"]}
    superuser = env["POSTGRES_USER"]["value"]  # the official image makes it a superuser
    dsns = decoded(one(chart, "Secret", "-ledger"))
    users = {key: make_url(dsn).username for key, dsn in dsns.items()}
    assert superuser not in users.values(), f"a DSN of the superuser {superuser}: {users}"

    # The init script, as the image's entrypoint runs it on a new data directory.
    url = postgres.create_database()
    database = url.rsplit("/", 1)[1]
    passwords = decoded(one(chart, "Secret", "-postgresql"))
    script = tmp_path / "aegis-roles.sh"
    script.write_text(one(chart, "ConfigMap", "-initdb")["data"]["aegis-roles.sh"])
    script.chmod(0o755)
    run_env = {
        "PATH": f"{postgres.bin_dir}:{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres.port),
        "POSTGRES_USER": "postgres",  # the test server's superuser stands in for it
        "POSTGRES_DB": database,
        "AEGIS_OWNER": env["AEGIS_OWNER"]["value"],
        **{
            name: passwords[env[name]["valueFrom"]["secretKeyRef"]["key"]]
            for name in ("AEGIS_OWNER_PASSWORD", "AEGIS_READER_PASSWORD", "AEGIS_CONTROL_PASSWORD")
        },
    }
    roles = [users[k] for k in ("dsn", "readerDsn", "controlDsn")]
    try:
        done = subprocess.run([str(script)], env=run_env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr

        def here(dsn: str) -> str:  # the chart's DSN, pointed at the test server
            return str(
                make_url(dsn)
                .set(host="127.0.0.1", port=postgres.port, database=database)
                .render_as_string(hide_password=False)
            )

        # The migration job's command, with the owner's DSN: it migrates and grants.
        job = one(chart, "Job", "-migrate")["spec"]["template"]["spec"]["containers"][0]
        args = expand(job["args"], {"AEGIS_LEDGER_DSN": here(dsns["dsn"])})
        done = subprocess.run([*AEGIS, *args], capture_output=True, text=True, timeout=120,
                              check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        check_roles(here(dsns["readerDsn"]), here(dsns["controlDsn"]), here(dsns["dsn"]))
    finally:
        postgres.drop_database(database)
        for role in roles:
            postgres.psql(f"DROP ROLE IF EXISTS {role}")


def check_roles(reader: str, control: str, owner: str) -> None:
    """None is a superuser; the reader reads, the control role writes a limit."""
    import asyncio

    async def run() -> None:
        for dsn in (reader, control, owner):
            engine = create_engine(dsn, isolation_level="AUTOCOMMIT")
            try:
                async with engine.connect() as connection:
                    superuser = await connection.scalar(
                        text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                    )
                    assert superuser is False, dsn
                    if dsn == reader:
                        await connection.execute(text("SELECT count(*) FROM aegis.budget_limits"))
                    if dsn == control:
                        await connection.execute(
                            text(
                                "SELECT aegis.set_budget('Namespace', 'team-a', 'monthly', "
                                "'openai', 5, '{team-a}')"
                            )
                        )
            finally:
                await engine.dispose()

    asyncio.run(run())
