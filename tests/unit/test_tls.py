"""server/tls.py: [api] ssl_* are refused with the option named, before anything listens."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from oslo_config import cfg

from servicegroup.conf import make_conf
from servicegroup.exceptions import ConfigError
from servicegroup.server.tls import ServerTls
from tests.certs import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def from_options(**api: Any) -> ServerTls:
    return ServerTls.from_conf(make_conf(**{f"api__{k}": v for k, v in api.items()}))


def serving(pki: Pki, **more: Any) -> dict[str, Any]:
    return {"ssl_certfile": str(pki.server.cert), "ssl_keyfile": str(pki.server.key), **more}


def test_tls_is_off_by_default() -> None:
    tls = from_options()
    assert not tls.enabled
    assert tls.uvicorn_options() == {}


def test_a_certificate_and_its_key_serve_tls(pki: Pki) -> None:
    tls = from_options(**serving(pki))
    assert tls.enabled
    assert tls.uvicorn_options() == {
        "ssl_certfile": str(pki.server.cert),
        "ssl_keyfile": str(pki.server.key),
        "ssl_ca_certs": None,
        "ssl_cert_reqs": ssl.CERT_NONE,
    }


@pytest.mark.parametrize(
    ("client_cert", "mode"), [("optional", ssl.CERT_OPTIONAL), ("required", ssl.CERT_REQUIRED)]
)
def test_mutual_tls_hands_uvicorn_the_ca_and_the_mode(
    pki: Pki, client_cert: str, mode: ssl.VerifyMode
) -> None:
    tls = from_options(**serving(pki, ssl_ca_file=str(pki.ca), ssl_client_cert=client_cert))
    options = tls.uvicorn_options()
    assert options["ssl_ca_certs"] == str(pki.ca) and options["ssl_cert_reqs"] == mode
    assert tls.context().verify_mode == mode


INCONSISTENT = [
    ({"ssl_certfile": "C"}, "ssl_certfile is set but ssl_keyfile is not"),
    ({"ssl_keyfile": "K"}, "ssl_keyfile is set but ssl_certfile is not"),
    ({"ssl_client_cert": "required"}, "ssl_client_cert = required needs ssl_ca_file"),
    ({"ssl_client_cert": "optional"}, "ssl_client_cert = optional needs ssl_ca_file"),
    ({"ssl_ca_file": "A"}, "ssl_ca_file is set but ssl_client_cert = none"),
    (
        {"ssl_ca_file": "A", "ssl_client_cert": "required"},
        "ssl_client_cert = required needs ssl_certfile and ssl_keyfile",
    ),
]


@pytest.mark.parametrize(("options", "message"), INCONSISTENT)
def test_options_that_do_not_go_together_are_named(options: dict[str, str], message: str) -> None:
    # The files need not exist: the combination is refused before any is read.
    with pytest.raises(ConfigError, match=message):
        from_options(**options)


def test_an_unknown_client_cert_mode_is_refused_by_its_choices(tmp_path: Path) -> None:
    conf_file = tmp_path / "sg.conf"
    conf_file.write_text("[api]\nssl_client_cert = sometimes\n")
    conf = make_conf(["--config-file", str(conf_file)])
    with pytest.raises(cfg.ConfigFileValueError, match="ssl_client_cert"):
        ServerTls.from_conf(conf)


@pytest.mark.parametrize("option", ["ssl_certfile", "ssl_keyfile", "ssl_ca_file"])
def test_a_missing_file_is_named_with_its_option(pki: Pki, tmp_path: Path, option: str) -> None:
    missing = str(tmp_path / "missing.pem")
    options = serving(pki, ssl_ca_file=str(pki.ca), ssl_client_cert="required")
    with pytest.raises(ConfigError, match=f"{option}: cannot read {missing}: No such file"):
        from_options(**{**options, option: missing})


def test_a_directory_or_an_empty_file_is_refused(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ssl_certfile: cannot read .*: Is a directory"):
        from_options(**serving(pki, ssl_certfile=str(tmp_path)))
    empty = tmp_path / "empty.pem"
    empty.touch()
    with pytest.raises(ConfigError, match=f"ssl_keyfile: {empty} is empty"):
        from_options(**serving(pki, ssl_keyfile=str(empty)))


def test_a_key_of_another_certificate_is_refused(pki: Pki) -> None:
    with pytest.raises(
        ConfigError, match=r"ssl_keyfile .* is not the private key of \[api\] ssl_certfile"
    ):
        from_options(**serving(pki, ssl_keyfile=str(pki.client.key)))


def test_files_swapped_or_garbled_are_blamed_on_the_right_option(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[api\] ssl_certfile .*: not a PEM certificate"):
        from_options(**serving(pki, ssl_certfile=str(pki.server.key)))
    with pytest.raises(ConfigError, match=r"\[api\] ssl_keyfile .*: not a PEM private key"):
        from_options(**serving(pki, ssl_keyfile=str(pki.server.cert)))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"\[api\] ssl_ca_file .*: not a PEM bundle of CA"):
        from_options(**serving(pki, ssl_ca_file=str(junk), ssl_client_cert="optional"))


def test_an_encrypted_key_is_refused_without_a_prompt(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(ConfigError, match=r"ssl_keyfile .*encrypted\.key: the key is encrypted"):
        from_options(**serving(pki, ssl_keyfile=str(encrypted)))
