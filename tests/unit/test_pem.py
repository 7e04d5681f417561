"""pem.py on the client side: a CA bundle and a client certificate, or an error naming them."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from servicegroup import pem
from servicegroup.client import Client
from servicegroup.exceptions import ConfigError
from tests.certs import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def test_by_default_the_daemon_is_checked_against_the_default_bundle() -> None:
    context = pem.client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0


def test_a_ca_file_is_the_only_ca_trusted(pki: Pki) -> None:
    context = pem.client_context(str(pki.ca))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1


def test_a_client_certificate_with_its_key_or_in_one_file(pki: Pki, tmp_path: Path) -> None:
    pem.client_context(str(pki.ca), str(pki.client.cert), str(pki.client.key))
    both = tmp_path / "both.pem"
    both.write_bytes(pki.client.cert.read_bytes() + pki.client.key.read_bytes())
    pem.client_context(str(pki.ca), str(both))


def test_unusable_files_are_named(pki: Pki, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=f"CA file: cannot read {missing}: No such file"):
        pem.client_context(missing)
    with pytest.raises(ConfigError, match=r"CA file .*: not a PEM bundle of CA certificates"):
        pem.client_context(str(pki.client.key))
    with pytest.raises(ConfigError, match="client key: needs the client certificate"):
        pem.client_context(str(pki.ca), None, str(pki.client.key))
    with pytest.raises(ConfigError, match="client certificate: cannot read"):
        pem.client_context(str(pki.ca), missing, str(pki.client.key))
    with pytest.raises(ConfigError, match="is not the private key of client certificate"):
        pem.client_context(str(pki.ca), str(pki.client.cert), str(pki.server.key))
    with pytest.raises(ConfigError, match=r"client key .*: not a PEM private key"):
        pem.client_context(str(pki.ca), str(pki.client.cert))  # no key anywhere


def test_the_client_refuses_them_when_built_not_at_each_request(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CA file: cannot read"):
        Client("https://127.0.0.1:1", ca_file=str(tmp_path / "missing.pem"))
