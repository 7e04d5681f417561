"""The real daemon over TLS, with a throwaway CA: who is served, who is refused, and where.

Three daemons share the module, one per `[api] ssl_client_cert`; the one
with `none` runs two workers, so its TLS is served on the pre-bound
SO_REUSEPORT sockets of workers.py. Clients are the project's own (Client,
`servicegroup agent`) and, to see the handshake itself, a bare ssl socket.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servicegroup.client import Client
from servicegroup.exceptions import BackendError
from servicegroup.service import State
from tests.certs import Issued, Pki
from tests.functional.daemon import Daemon, free_port
from tests.functional.test_daemon import eventually, migrated_sqlite

SCRIPT = Path(sys.executable).parent / "servicegroup"
AGENT, ADMIN = "agent-tls-51c", "admin-tls-0e8"
MODES = ("none", "optional", "required")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def trusting(pki: Pki, with_cert: bool = True, issued: Issued | None = None) -> ssl.SSLContext:
    """A client context that trusts the test CA, showing a client certificate if asked
    (`issued`, by default the one the CA signed)."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    if with_cert:
        issued = issued or pki.client
        context.load_cert_chain(issued.cert, issued.key)
    return context


def tls_daemon(
    tmp: Path,
    pki: Pki,
    client_cert: str,
    *,
    host: str = "127.0.0.1",
    extra: str = "",
    ca_file: bool = True,
) -> Daemon:
    """`ca_file`: set [api] ssl_ca_file when client certificates are asked for."""
    port = free_port()
    ca = f"ssl_ca_file = {pki.ca}\n" if client_cert != "none" and ca_file else ""
    config = tmp / "sg.conf"
    config.write_text(
        f"[database]\nconnection = {migrated_sqlite(tmp / 'sg.sqlite')}\n"
        f"[api]\nhost = {host}\nport = {port}\n"
        f"agent_tokens = {AGENT}\nadmin_tokens = {ADMIN}\n"
        f"ssl_certfile = {pki.server.cert}\nssl_keyfile = {pki.server.key}\n"
        f"ssl_client_cert = {client_cert}\n{ca}{extra}"
    )
    argv = [sys.executable, "-m", "servicegroup.server", "--config-file", str(config)]
    return Daemon(config, port, tmp / "daemon.log", argv, verify=trusting(pki)).start()


@pytest.fixture(scope="module")
def daemons(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Daemon]]:
    started = {
        mode: tls_daemon(
            tmp_path_factory.mktemp(f"tls-{mode}"),
            pki,
            mode,
            extra="workers = 2\n" if mode == "none" else "",
        )
        for mode in MODES
    }
    try:
        for daemon in started.values():
            daemon.wait_ready()
        yield started
    finally:
        for daemon in started.values():
            daemon.stop()
            assert "Traceback" not in daemon.log(), daemon.log()


def client_files(pki: Pki, stranger: bool = False) -> dict[str, str]:
    """Client's keyword arguments for the client certificate (or one from another CA)."""
    issued = pki.stranger if stranger else pki.client
    return {"client_cert": str(issued.cert), "client_key": str(issued.key)}


def beat_once(client: Client) -> None:
    """Register, beat and read back: the API works through this client, end to end."""
    service = client.register(f"h-{id(client)}", "tls-svc")
    client.heartbeat(service)
    assert client.get(service).state is State.UP


def refused(url: str, reason: str, **client_args: str | None) -> None:
    """The client's first request fails, in TLS, for `reason`."""
    with Client(url, ADMIN, **client_args) as client, pytest.raises(BackendError, match=reason):
        client.health()


# What a client sees when the daemon refuses its certificate under TLS 1.3: the
# server judges it after the client's side of the handshake is done, then
# closes the connection without an alert (uvloop sends none) and without a word.
DROPPED = "Server disconnected without sending a response"


@pytest.mark.parametrize("mode", MODES)
def test_a_client_that_trusts_the_ca_works(daemons: dict[str, Daemon], pki: Pki, mode: str) -> None:
    daemon = daemons[mode]
    for _ in range(4):  # new connections each time: with two workers, both get some
        with Client(daemon.url, ADMIN, ca_file=str(pki.ca), **client_files(pki)) as client:
            beat_once(client)


def test_both_workers_serve_tls(daemons: dict[str, Daemon]) -> None:
    starts = [line for line in daemons["none"].log().splitlines() if "starting on https://" in line]
    assert len(starts) == 2, daemons["none"].log()


@pytest.mark.parametrize("mode", MODES)
def test_a_client_that_does_not_trust_the_ca_is_refused(
    daemons: dict[str, Daemon], pki: Pki, mode: str
) -> None:
    for ca_file in (None, str(pki.other_ca)):  # the default bundle, then another CA
        refused(
            daemons[mode].url, "CERTIFICATE_VERIFY_FAILED", ca_file=ca_file, **client_files(pki)
        )


def test_plain_http_gets_no_answer(daemons: dict[str, Daemon]) -> None:
    plain = daemons["none"].url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/healthz", timeout=5.0)


def handshake(daemon: Daemon, context: ssl.SSLContext) -> None:
    """A TLS 1.2 handshake alone: there, the server's verdict on the client's certificate
    ends the handshake itself (TLS 1.3 sends it after the client's Finished)."""
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    port = int(daemon.url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5.0) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.do_handshake()


def test_required_refuses_a_client_without_a_certificate_at_the_handshake(
    daemons: dict[str, Daemon], pki: Pki
) -> None:
    daemon = daemons["required"]
    # The server drops the connection mid-handshake (uvloop sends no alert): any SSLError.
    with pytest.raises(ssl.SSLError):
        handshake(daemon, trusting(pki, with_cert=False))
    handshake(daemon, trusting(pki))  # the same, with the certificate: done
    # TLS 1.3 (the default): no HTTP answer ever comes.
    refused(daemon.url, DROPPED, ca_file=str(pki.ca))


def test_required_accepts_only_a_certificate_signed_by_the_ca(
    daemons: dict[str, Daemon], pki: Pki
) -> None:
    daemon = daemons["required"]
    url, ca = daemon.url, str(pki.ca)
    with Client(url, ADMIN, ca_file=ca, **client_files(pki)) as client:
        beat_once(client)
    refused(url, DROPPED, ca_file=ca, **client_files(pki, stranger=True))
    with pytest.raises(ssl.SSLError):
        handshake(daemon, trusting(pki, issued=pki.stranger))


def test_optional_accepts_a_client_with_or_without_a_certificate(
    daemons: dict[str, Daemon], pki: Pki
) -> None:
    daemon = daemons["optional"]
    url, ca = daemon.url, str(pki.ca)
    with Client(url, ADMIN, ca_file=ca) as client:
        beat_once(client)
    handshake(daemon, trusting(pki, with_cert=False))
    with Client(url, ADMIN, ca_file=ca, **client_files(pki)) as client:
        beat_once(client)
    # A certificate that is shown is checked, even when none is needed.
    refused(url, DROPPED, ca_file=ca, **client_files(pki, stranger=True))
    with pytest.raises(ssl.SSLError):
        handshake(daemon, trusting(pki, issued=pki.stranger))


def test_the_agent_beats_over_mutual_tls(
    daemons: dict[str, Daemon], pki: Pki, tmp_path: Path
) -> None:
    daemon = daemons["required"]
    host = f"agent-{free_port()}"
    argv = [
        str(SCRIPT),
        "agent",
        "--daemon-url",
        daemon.url,
        "--token",
        AGENT,
        "--ca-file",
        str(pki.ca),
        "--client-cert",
        str(pki.client.cert),
        "--client-key",
        str(pki.client.key),
        "--host",
        host,
        "--binary",
        "tls-agent",
        "--interval",
        "0.1",
        "--check",
        "true",
    ]
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(argv, stdout=out, stderr=out)
    try:
        with Client(daemon.url, ADMIN, ca_file=str(pki.ca), **client_files(pki)) as reader:

            def up() -> bool:
                assert agent.poll() is None, log.read_text()
                return [s.state for s in reader.get_all(host=host)] == [State.UP]

            eventually(up, f"the agent's service up; its log:\n{log.read_text()}")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=20) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_tokens_with_tls_may_listen_on_every_interface(pki: Pki, tmp_path: Path) -> None:
    daemon = tls_daemon(tmp_path, pki, "none", host="0.0.0.0").wait_ready()
    try:
        with Client(daemon.url, AGENT, ca_file=str(pki.ca)) as client:
            client.register("h", "b")
    finally:
        daemon.stop()
    assert "WARNING" not in daemon.log(), daemon.log()


def test_a_tls_mistake_is_one_line_naming_the_option(pki: Pki, tmp_path: Path) -> None:
    # required, with no ssl_ca_file to check client certificates against
    daemon = tls_daemon(tmp_path, pki, "required", ca_file=False)
    try:
        assert daemon.wait_exit() == 1
    finally:
        daemon.stop()
    lines = daemon.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert "ssl_client_cert = required needs ssl_ca_file" in lines[0]
