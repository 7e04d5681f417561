"""server/tls.py: [api] ssl_* are refused with the option named, before anything listens;
renewed files go into the context that serves, whole or not at all.

Handshakes here run in memory (ssl.MemoryBIO): the server side is the
context uvicorn built, as it serves it (its SNI callback moves each handshake
to the renewed context); the client checks it against the test CA.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from oslo_config import cfg

from servicegroup.conf import make_conf
from servicegroup.exceptions import ConfigError
from servicegroup.server.tls import CertReloader, LiveContext, ServerTls, fingerprint
from tests.certs import Issued, Pki


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
    assert tls.uvicorn_options(LiveContext()) == {}


def test_a_certificate_and_its_key_serve_tls(pki: Pki) -> None:
    tls = from_options(**serving(pki))
    assert tls.enabled
    live = LiveContext()
    assert tls.uvicorn_options(live) == {
        "ssl_certfile": str(pki.server.cert),
        "ssl_keyfile": str(pki.server.key),
        "ssl_ca_certs": None,
        "ssl_cert_reqs": ssl.CERT_NONE,
        "ssl_context_factory": live.factory,
    }


@pytest.mark.parametrize(
    ("client_cert", "mode"), [("optional", ssl.CERT_OPTIONAL), ("required", ssl.CERT_REQUIRED)]
)
def test_mutual_tls_hands_uvicorn_the_ca_and_the_mode(
    pki: Pki, client_cert: str, mode: ssl.VerifyMode
) -> None:
    tls = from_options(**serving(pki, ssl_ca_file=str(pki.ca), ssl_client_cert=client_cert))
    options = tls.uvicorn_options(LiveContext())
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


def served(server: ssl.SSLContext, ca: Path, client: Issued | None = None) -> bytes:
    """The certificate `server` shows in a handshake, in memory, to a client trusting `ca`
    (showing `client`'s certificate if given); ssl.SSLError if the handshake fails."""
    client_context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        client_context.load_cert_chain(client.cert, client.key)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client_context.wrap_bio(to_client, to_server, server_hostname="localhost")
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    done = {client_end: False, server_end: False}
    for _ in range(10):  # a TLS 1.3 handshake takes two flights each way
        for end in done:
            if not done[end]:
                try:
                    end.do_handshake()
                    done[end] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            break
    # The server end finishes only after judging the client's certificate: a refusal
    # raised above.
    assert all(done.values()), "the handshake did not finish"
    peer = client_end.getpeercert(binary_form=True)
    assert peer is not None
    return peer


def der(issued: Issued) -> bytes:
    return ssl.PEM_cert_to_DER_cert(issued.cert.read_text())


def installed(pki: Pki, where: Path) -> Issued:
    """The server's pair copied where a renewal will replace it, as the daemon's files."""
    where.mkdir()
    shutil.copy(pki.server.cert, where / "server.pem")
    shutil.copy(pki.server.key, where / "server.key")
    return Issued(cert=where / "server.pem", key=where / "server.key")


def moved_over(source: Path, target: Path) -> None:
    """How a renewal should land: a new file renamed over the old one."""
    fresh = target.with_name(target.name + ".new")
    shutil.copy(source, fresh)
    os.replace(fresh, target)


def uvicorn_serving(tls: ServerTls) -> tuple[LiveContext, ssl.SSLContext]:
    """What the daemon does: uvicorn builds its context, LiveContext keeps it."""
    live = LiveContext()
    config = uvicorn.Config(lambda: None, **tls.uvicorn_options(live))
    config.load()
    assert config.ssl is not None and config.ssl is live.context
    return live, config.ssl


def test_uvicorn_serves_with_the_context_the_live_context_keeps(pki: Pki) -> None:
    _, context = uvicorn_serving(from_options(**serving(pki)))
    assert served(context, pki.ca) == der(pki.server)


def test_a_renewed_pair_is_served_by_the_same_context(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = installed(pki, tmp_path / "etc")
    tls = from_options(ssl_certfile=str(files.cert), ssl_keyfile=str(files.key))
    live, context = uvicorn_serving(tls)
    reloader = CertReloader(tls, live)
    assert reloader.paths == [str(files.cert), str(files.key)]
    assert reloader.reload("SIGHUP") is False  # nothing new: nothing loaded

    renewed = pki.renew(tmp_path / "renewed")
    moved_over(renewed.key, files.key)
    moved_over(renewed.cert, files.cert)
    caplog.set_level(logging.INFO)
    assert reloader.reload("a file changed") is True
    assert served(context, pki.ca) == der(renewed) != der(pki.server)
    assert fingerprint(str(files.cert)) in caplog.text
    assert "TLS reload (a file changed): new connections get" in caplog.text


def test_a_renewal_caught_half_done_keeps_the_old_pair_and_says_why(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = installed(pki, tmp_path / "etc")
    tls = from_options(ssl_certfile=str(files.cert), ssl_keyfile=str(files.key))
    live, context = uvicorn_serving(tls)
    reloader = CertReloader(tls, live)
    renewed = pki.renew(tmp_path / "renewed")

    moved_over(renewed.cert, files.cert)  # the certificate first, its key not yet
    assert reloader.reload("a file changed") is False
    assert served(context, pki.ca) == der(pki.server)
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "TLS reload (a file changed) refused" in line
    assert f"[api] ssl_keyfile {files.key} is not the private key of" in line

    files.key.write_text("")  # then a key file caught empty mid-write
    assert reloader.reload("a file changed") is False
    assert f"ssl_keyfile: {files.key} is empty" in caplog.text
    assert served(context, pki.ca) == der(pki.server)

    moved_over(renewed.key, files.key)  # the key lands: the pair is whole again
    assert reloader.reload("a file changed") is True
    assert served(context, pki.ca) == der(renewed)


def test_a_new_ca_file_is_honoured_for_client_certificates_added_or_dropped(
    pki: Pki, tmp_path: Path
) -> None:
    files = installed(pki, tmp_path / "etc")
    ca_file = tmp_path / "etc" / "clients-ca.pem"
    shutil.copy(pki.ca, ca_file)
    tls = from_options(
        ssl_certfile=str(files.cert),
        ssl_keyfile=str(files.key),
        ssl_ca_file=str(ca_file),
        ssl_client_cert="required",
    )
    live, context = uvicorn_serving(tls)
    reloader = CertReloader(tls, live)
    assert reloader.paths[-1] == str(ca_file)
    served(context, pki.ca, client=pki.client)
    with pytest.raises(ssl.SSLError):
        served(context, pki.ca, client=pki.stranger)

    bundle = tmp_path / "bundle.pem"
    bundle.write_text(pki.ca.read_text() + pki.other_ca.read_text())
    moved_over(bundle, ca_file)
    assert reloader.reload("SIGHUP") is True
    served(context, pki.ca, client=pki.stranger)  # signed by the CA just added
    served(context, pki.ca, client=pki.client)

    moved_over(pki.other_ca, ca_file)  # the old CA dropped: its clients are refused
    assert reloader.reload("SIGHUP") is True
    served(context, pki.ca, client=pki.stranger)
    with pytest.raises(ssl.SSLError):
        served(context, pki.ca, client=pki.client)


def test_a_renewal_swaps_what_new_handshakes_get_and_leaves_uvicorns_context(
    pki: Pki, tmp_path: Path
) -> None:
    """uvicorn's server keeps its context; the SNI callback moves each handshake to the new
    one (a connection open before keeps its own: tests/functional/test_cert_rotation_daemon)."""
    files = installed(pki, tmp_path / "etc")
    tls = from_options(ssl_certfile=str(files.cert), ssl_keyfile=str(files.key))
    live, context = uvicorn_serving(tls)
    before = live.current
    renewed = pki.renew(tmp_path / "renewed")
    moved_over(renewed.key, files.key)
    moved_over(renewed.cert, files.cert)
    live.renew()
    assert live.current is not before and live.context is context  # uvicorn's, unchanged
    assert served(context, pki.ca) == der(renewed)
