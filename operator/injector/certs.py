"""The webhook's CA and serving certificate, made with ``cryptography`` (pure functions).

kopf's built-in self-signed path depends on oscrypto, which fails with OpenSSL 3
(oscrypto#78); ``cryptography`` is already a dependency and works everywhere.

Every replica runs :func:`plan` against the shared state (a Secret) and writes the
result with optimistic concurrency, so replicas converge on one CA and one serving
certificate without a leader. Rotation never breaks trust:

- the serving certificate is reissued when it nears expiry, its DNS names change or
  it was not issued by the current CA;
- a CA nearing expiry is first only *added* to the bundle as "next" (the API server
  trusts old and new), and becomes the signing CA after ``ca_propagation``; the old
  CA stays in the bundle as "previous" until it expires.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BACKDATE = datetime.timedelta(minutes=1)
"""Certificates start slightly in the past: tolerates clock skew with the API server."""
_KEYS = {
    "ca.crt": "ca_cert",
    "ca.key": "ca_key",
    "tls.crt": "tls_cert",
    "tls.key": "tls_key",
    "ca-next.crt": "next_ca_cert",
    "ca-next.key": "next_ca_key",
    "ca-previous.crt": "previous_ca_cert",
}


@dataclass(frozen=True)
class Policy:
    sans: tuple[str, ...]
    leaf_validity: datetime.timedelta = datetime.timedelta(days=90)
    leaf_renew_before: datetime.timedelta = datetime.timedelta(days=30)
    ca_validity: datetime.timedelta = datetime.timedelta(days=5 * 365)
    ca_renew_before: datetime.timedelta = datetime.timedelta(days=365)
    ca_propagation: datetime.timedelta = datetime.timedelta(minutes=10)

    def __post_init__(self) -> None:
        if not self.sans:
            raise ValueError("the serving certificate needs at least one DNS name or IP")
        if self.leaf_renew_before >= self.leaf_validity:
            raise ValueError("leaf renew-before must be shorter than the leaf validity")
        if self.ca_renew_before >= self.ca_validity:
            raise ValueError("CA renew-before must be shorter than the CA validity")


@dataclass(frozen=True)
class TlsState:
    """PEM material, as stored in the Secret."""

    ca_cert: bytes
    ca_key: bytes
    tls_cert: bytes
    tls_key: bytes
    next_ca_cert: bytes | None = None
    next_ca_key: bytes | None = None
    previous_ca_cert: bytes | None = None

    def ca_bundle(self, now: datetime.datetime) -> bytes:
        """The CAs the API server must trust: signing, next and unexpired previous."""
        bundle = [self.ca_cert]
        if self.next_ca_cert:
            bundle.append(self.next_ca_cert)
        if self.previous_ca_cert and not_after(self.previous_ca_cert) > now:
            bundle.append(self.previous_ca_cert)
        return b"".join(bundle)

    def secret_data(self, now: datetime.datetime) -> dict[str, str]:
        data = {
            key: base64.b64encode(value).decode()
            for key, attr in _KEYS.items()
            if (value := getattr(self, attr))
        }
        data["ca-bundle.crt"] = base64.b64encode(self.ca_bundle(now)).decode()
        return data

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None) -> TlsState | None:
        """The stored state, or ``None`` when absent or unreadable (then it is remade)."""
        if not data:
            return None
        values = {attr: base64.b64decode(data[key]) for key, attr in _KEYS.items() if key in data}
        try:
            state = cls(**values)
            for pem in (state.ca_cert, state.tls_cert):
                x509.load_pem_x509_certificate(pem)
        except (TypeError, ValueError):
            return None
        return state


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("only ECDSA keys are used here")
    return key


def not_after(pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def not_before(pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_before_utc


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def new_ca(now: datetime.datetime, validity: datetime.timedelta) -> tuple[bytes, bytes]:
    """A self-signed CA ``(cert PEM, key PEM)``; the name carries its creation time."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"aegis-injector-ca@{int(now.timestamp())}")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _general_names(sans: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for item in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            names.append(x509.DNSName(item))
    return names


def new_leaf(
    ca_cert_pem: bytes, ca_key_pem: bytes, sans: tuple[str, ...], now: datetime.datetime,
    validity: datetime.timedelta,
) -> tuple[bytes, bytes]:  # fmt: skip
    """A serving certificate for ``sans``, never outliving its CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = _load_key(ca_key_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_general_names(sans)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def leaf_problem(state: TlsState, policy: Policy, now: datetime.datetime) -> str | None:
    """Why the serving certificate must be reissued (``None``: it is fine)."""
    leaf = x509.load_pem_x509_certificate(state.tls_cert)
    ca = x509.load_pem_x509_certificate(state.ca_cert)
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "not issued by the current CA"
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subject alternative names"
    if set(sans) != set(_general_names(policy.sans)):
        return "DNS names changed"
    if leaf.not_valid_after_utc - now < policy.leaf_renew_before:
        return "expires soon"
    return None


def plan(state: TlsState | None, policy: Policy, now: datetime.datetime) -> tuple[TlsState, str]:
    """The state to store next and why; the same state with reason ``""`` when current."""
    if state is None or not_after(state.ca_cert) <= now:
        ca_cert, ca_key = new_ca(now, policy.ca_validity)
        tls_cert, tls_key = new_leaf(ca_cert, ca_key, policy.sans, now, policy.leaf_validity)
        return TlsState(ca_cert, ca_key, tls_cert, tls_key), "created CA and certificate"
    if state.next_ca_cert and state.next_ca_key:
        if now - (not_before(state.next_ca_cert) + BACKDATE) >= policy.ca_propagation:
            tls_cert, tls_key = new_leaf(
                state.next_ca_cert, state.next_ca_key, policy.sans, now, policy.leaf_validity
            )
            promoted = TlsState(
                state.next_ca_cert, state.next_ca_key, tls_cert, tls_key,
                previous_ca_cert=state.ca_cert,
            )  # fmt: skip
            return promoted, "promoted the next CA and reissued the certificate"
    elif not_after(state.ca_cert) - now < policy.ca_renew_before:
        next_cert, next_key = new_ca(now, policy.ca_validity)
        staged = replace(state, next_ca_cert=next_cert, next_ca_key=next_key)
        return staged, "added the next CA to the bundle"
    problem = leaf_problem(state, policy, now)
    if problem:
        tls_cert, tls_key = new_leaf(
            state.ca_cert, state.ca_key, policy.sans, now, policy.leaf_validity
        )
        return replace(state, tls_cert=tls_cert, tls_key=tls_key), f"reissued ({problem})"
    if state.previous_ca_cert and not_after(state.previous_ca_cert) <= now:
        return replace(state, previous_ca_cert=None), "dropped the expired previous CA"
    return state, ""
