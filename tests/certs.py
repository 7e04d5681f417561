"""A throwaway PKI for TLS tests: CAs, and certificates they sign, as PEM files.

Made with the cryptography package in a few milliseconds (EC P-256 keys), so
each test session gets fresh keys and no key is ever committed.

Usage::

    pki = Pki.create(tmp_path)          # ca, server (127.0.0.1, localhost), client
    pki.server.cert, pki.server.key     # paths for [api] ssl_certfile / ssl_keyfile
    pki.ca                              # path for ssl_ca_file and for clients to trust
    pki.stranger                        # a client certificate from another CA
    pki.renew(tmp_path / "next")        # a new server certificate from the same CA
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LIFETIME = datetime.timedelta(days=1)
SERVER_NAMES = ("localhost",)
SERVER_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its unencrypted private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class _Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate, PEM
    server: Issued  # signed by ca, for 127.0.0.1, ::1 and localhost
    client: Issued  # signed by ca
    other_ca: Path  # another CA, which signed nothing the daemon serves
    stranger: Issued  # a client certificate signed by other_ca
    authority: _Authority  # ca's key, to renew the server's certificate

    @classmethod
    def create(cls, where: Path) -> Pki:
        where.mkdir(parents=True, exist_ok=True)
        ca = _authority("servicegroup test CA")
        other = _authority("some other CA")
        return cls(
            ca=_write_cert(where / "ca.pem", ca.cert),
            server=_issue(where, "server", ca, server=True),
            client=_issue(where, "client", ca, server=False),
            other_ca=_write_cert(where / "other-ca.pem", other.cert),
            stranger=_issue(where, "stranger", other, server=False),
            authority=ca,
        )

    def renew(self, where: Path) -> Issued:
        """A new server certificate and key from the same CA, for the same names: another
        serial, another key, as a renewal brings."""
        where.mkdir(parents=True, exist_ok=True)
        return _issue(where, "server", self.authority, server=True)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
    )


def _authority(common_name: str) -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    cert = (
        _builder(common_name, _name(common_name), public)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Authority(cert, key)


def _issue(where: Path, name: str, ca: _Authority, *, server: bool) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(f"servicegroup test {name}", ca.cert.subject, public)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server:
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
        alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in SERVER_ADDRESSES]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    key_path = where / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Issued(cert=_write_cert(where / f"{name}.pem", cert), key=key_path)


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path
