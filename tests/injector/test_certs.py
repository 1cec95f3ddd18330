"""Certificates: TLS works with them, and the rotation plan never breaks trust."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from aegis.operator.injector import certs
from aegis.operator.injector.tls import ServingTls

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
POLICY = certs.Policy(
    sans=("aegis-injector.aegis-system.svc", "127.0.0.1"),
    leaf_validity=90 * DAY,
    leaf_renew_before=30 * DAY,
    ca_validity=1000 * DAY,
    ca_renew_before=200 * DAY,
    ca_propagation=datetime.timedelta(minutes=10),
)


def trusted(state: certs.TlsState, now: datetime.datetime) -> bool:
    """The serving certificate verifies against the published bundle (as the API server)."""
    leaf = x509.load_pem_x509_certificate(state.tls_cert)
    for ca in x509.load_pem_x509_certificates(state.ca_bundle(now)):
        try:
            leaf.verify_directly_issued_by(ca)
        except Exception:
            continue
        return ca.not_valid_after_utc > now and leaf.not_valid_after_utc > now
    return False


def test_bootstrap_then_steady() -> None:
    state, reason = certs.plan(None, POLICY, T0)
    assert reason == "created CA and certificate"
    assert trusted(state, T0)
    again, reason = certs.plan(state, POLICY, T0 + DAY)
    assert (again, reason) == (state, "")


def test_secret_round_trip() -> None:
    state, _ = certs.plan(None, POLICY, T0)
    data = state.secret_data(T0)
    assert set(data) == {"ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt"}
    assert certs.TlsState.from_secret_data(data) == state
    assert certs.TlsState.from_secret_data({}) is None
    assert certs.TlsState.from_secret_data({"ca.crt": "bm90IGEgY2VydA=="}) is None


def test_leaf_is_reissued_before_expiry_and_when_names_change() -> None:
    state, _ = certs.plan(None, POLICY, T0)
    later = T0 + 61 * DAY  # 29 days left < 30 days renew-before
    renewed, reason = certs.plan(state, POLICY, later)
    assert reason == "reissued (expires soon)"
    assert renewed.ca_cert == state.ca_cert and renewed.tls_cert != state.tls_cert
    assert trusted(renewed, later)

    wider = certs.Policy(sans=(*POLICY.sans, "aegis-injector"))
    _, reason = certs.plan(state, wider, T0)
    assert reason == "reissued (DNS names changed)"


def test_ca_rotation_stages_keep_every_served_certificate_trusted() -> None:
    state, _ = certs.plan(None, POLICY, T0)
    now = T0
    seen_reasons = []
    # Walk 4 CA lifetimes in 1-day steps (plus the propagation wait): at every moment
    # the certificate a replica may still serve (the previous state) and the new one
    # are trusted by the bundle that is published.
    while now < T0 + 4000 * DAY:
        now += DAY
        new, reason = certs.plan(state, POLICY, now)
        if reason:
            seen_reasons.append(reason)
            assert trusted(new, now)
            # a replica still serving the old certificate is trusted by the new bundle
            old_leaf_still_valid = certs.not_after(state.tls_cert) > now
            if old_leaf_still_valid:
                assert trusted(certs.TlsState(**{**new.__dict__, "tls_cert": state.tls_cert}), now)
        state = new
        assert trusted(state, now)
    assert "added the next CA to the bundle" in seen_reasons
    assert "promoted the next CA and reissued the certificate" in seen_reasons
    assert "dropped the expired previous CA" in seen_reasons


def test_next_ca_waits_for_propagation() -> None:
    state, _ = certs.plan(None, POLICY, T0)
    due = T0 + 801 * DAY
    staged, reason = certs.plan(state, POLICY, due)
    assert reason == "added the next CA to the bundle"
    assert staged.next_ca_cert and staged.ca_cert == state.ca_cert
    waiting, _ = certs.plan(staged, POLICY, due + datetime.timedelta(minutes=5))
    assert (waiting.ca_cert, waiting.next_ca_cert) == (state.ca_cert, staged.next_ca_cert)
    promoted, reason = certs.plan(staged, POLICY, due + datetime.timedelta(minutes=11))
    assert promoted.ca_cert == staged.next_ca_cert
    assert promoted.previous_ca_cert == state.ca_cert


def test_serving_context_hot_swaps_for_new_handshakes(tmp_path: Path) -> None:
    first, _ = certs.plan(None, POLICY, datetime.datetime.now(datetime.UTC))
    second, _ = certs.plan(None, POLICY, datetime.datetime.now(datetime.UTC))
    serving = ServingTls()
    assert serving.load(first.tls_cert, first.tls_key)
    assert not serving.load(first.tls_cert, first.tls_key)  # unchanged: no-op

    async def serial_seen(ca_pem: bytes) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=serving.context)
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cadata=ca_pem.decode())
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        server.close()
        await server.wait_closed()
        return x509.load_der_x509_certificate(der).serial_number

    assert asyncio.run(serial_seen(first.ca_cert)) == certs.serial(first.tls_cert)
    assert serving.load(second.tls_cert, second.tls_key)
    assert asyncio.run(serial_seen(second.ca_cert)) == certs.serial(second.tls_cert)


def test_mismatched_pair_leaves_the_served_certificate_alone() -> None:
    first, _ = certs.plan(None, POLICY, T0)
    second, _ = certs.plan(None, POLICY, T0)
    serving = ServingTls()
    serving.load(first.tls_cert, first.tls_key)
    try:
        serving.load(second.tls_cert, first.tls_key)
    except ssl.SSLError:
        pass
    else:
        raise AssertionError("a certificate with the wrong key was accepted")
    assert serving.fingerprint is not None
    assert not serving.load(first.tls_cert, first.tls_key)  # still the first pair


async def test_files_mode_reloads_changed_certificates(tmp_path: Path) -> None:
    """cert-manager mode: a renewed Secret (files swapped in the mount) is picked up."""
    from aegis.operator.injector.tls import FileTls

    first, _ = certs.plan(None, POLICY, datetime.datetime.now(datetime.UTC))
    second, _ = certs.plan(None, POLICY, datetime.datetime.now(datetime.UTC))
    (tmp_path / "tls.crt").write_bytes(first.tls_cert)
    (tmp_path / "tls.key").write_bytes(first.tls_key)
    loaded: list[int] = []
    renewed, loop = asyncio.Event(), asyncio.get_running_loop()

    def on_load(pem: bytes) -> None:  # called in the loader's worker thread
        loaded.append(certs.serial(pem))
        if len(loaded) == 2:
            loop.call_soon_threadsafe(renewed.set)

    serving = ServingTls(on_load=on_load)
    files = FileTls(serving, tmp_path, interval=0.05)
    task = asyncio.create_task(files.run())
    try:
        await asyncio.wait_for(serving.loaded.wait(), 5)
        fingerprint = serving.fingerprint
        (tmp_path / "tls.key").write_bytes(second.tls_key)  # half-written renewal: ignored
        with pytest.raises(ssl.SSLError):  # one pass over the files, as the loop makes
            await asyncio.to_thread(files.sync_once)
        assert serving.fingerprint == fingerprint  # still serving the first pair
        (tmp_path / "tls.crt").write_bytes(second.tls_cert)
        await asyncio.wait_for(renewed.wait(), 10)
    finally:
        task.cancel()
    assert loaded == [certs.serial(first.tls_cert), certs.serial(second.tls_cert)]
