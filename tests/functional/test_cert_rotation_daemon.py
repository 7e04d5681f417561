"""Certificates renewed under the real daemon: new handshakes get the new one, no restart.

The daemon's files are copies of a throwaway CA's (tests/certs.py) that the
tests replace as a renewal does: a new file renamed over the old. The daemon
sees it by its watcher or by SIGHUP, in one process or in two workers behind
one port; each process logs its reload once, and that line is what the tests
wait for. Then every new connection must show the new certificate (compared
whole, DER, as getpeercert(binary_form=True) gives it), while a connection
opened before, kept alive, goes on answering with the old one.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

from tests.certs import Issued, Pki
from tests.functional.daemon import Daemon, free_port
from tests.functional.test_daemon import migrated_sqlite
from tests.functional.test_daemon_tls import ADMIN, AGENT, trusting

DEADLINE = 20.0
# After "TLS reload (why", why being SIGHUP, a file changed, or start: a worker that
# starts its watcher after a test renewed the files (the daemon is ready when one is).
RELOADED = "): new connections get"
REFUSED = ") refused, the certificate loaded before is served on"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def moved_over(source: Path, target: Path) -> None:
    """How a renewal should land (doc/operations.md, TLS): a new file renamed over the old."""
    fresh = target.with_name(target.name + ".new")
    shutil.copy(source, fresh)
    os.replace(fresh, target)


def der(issued: Issued) -> bytes:
    return ssl.PEM_cert_to_DER_cert(issued.cert.read_text())


class Served:
    """A daemon serving TLS from files of its own, which a test may renew."""

    def __init__(
        self, tmp: Path, pki: Pki, *, workers: int, poll: float, client_cert: str = "none"
    ) -> None:
        etc = tmp / "etc"
        etc.mkdir()
        self.cert, self.key, self.ca = etc / "server.pem", etc / "server.key", etc / "ca.pem"
        shutil.copy(pki.server.cert, self.cert)
        shutil.copy(pki.server.key, self.key)
        shutil.copy(pki.ca, self.ca)
        self.workers = workers
        self.port = free_port()
        ca = f"ssl_ca_file = {self.ca}\n" if client_cert != "none" else ""
        config = tmp / "sg.conf"
        config.write_text(
            f"[database]\nconnection = {migrated_sqlite(tmp / 'sg.sqlite')}\n"
            f"[api]\nport = {self.port}\nworkers = {workers}\n"
            f"token_file_poll_interval = {poll}\n"
            f"agent_tokens = {AGENT}\nadmin_tokens = {ADMIN}\n"
            f"ssl_certfile = {self.cert}\nssl_keyfile = {self.key}\n"
            f"ssl_client_cert = {client_cert}\n{ca}"
        )
        argv = [sys.executable, "-m", "servicegroup.server", "--config-file", str(config)]
        self.daemon = Daemon(config, self.port, tmp / "daemon.log", argv, verify=trusting(pki))

    def __enter__(self) -> Served:
        self.daemon.start().wait_ready()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.daemon.stop()

    def renew(self, issued: Issued, trigger: str) -> None:
        """Rename the new pair into place; with "sighup", then signal the daemon (the
        supervisor, with workers: it forwards the signal)."""
        moved_over(issued.key, self.key)
        moved_over(issued.cert, self.cert)
        if trigger == "sighup":
            self.daemon.signal(signal.SIGHUP)

    def wait_logged(self, text: str, rounds: int = 1) -> list[str]:
        """The log's lines with `text`, once there are `rounds` per process."""
        times = rounds * self.workers
        deadline = time.monotonic() + DEADLINE
        while True:
            lines = [line for line in self.daemon.log().splitlines() if text in line]
            if len(lines) >= times:
                return lines
            assert time.monotonic() < deadline, f"never {times}x {text!r}:\n{self.log()}"
            time.sleep(0.02)

    def log(self) -> str:
        return self.daemon.log()

    def peer(self, context: ssl.SSLContext, *, tls12: bool = False) -> bytes:
        """The certificate a new connection is shown (a TLS 1.2 handshake if asked: there
        a refused client certificate fails the handshake itself)."""
        if tls12:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=5.0) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            peer = tls.getpeercert(binary_form=True)
        assert peer is not None
        return peer


def kept_alive(port: int, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10.0)
    answered(connection)
    return connection


def answered(connection: http.client.HTTPSConnection) -> None:
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    assert not response.will_close  # the same connection serves the next request


@pytest.mark.parametrize(
    ("trigger", "workers"), [("file", 1), ("file", 2), ("sighup", 1), ("sighup", 2)]
)
def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(
    pki: Pki, tmp_path: Path, trigger: str, workers: int
) -> None:
    # With SIGHUP the watcher looks once an hour: only the signal can make the swap.
    poll = 0.02 if trigger == "file" else 3600.0
    renewed = pki.renew(tmp_path / "renewed")
    assert der(renewed) != der(pki.server)
    with Served(tmp_path, pki, workers=workers, poll=poll) as served:
        assert served.daemon.proc is not None
        pid = served.daemon.proc.pid
        old = kept_alive(served.port, trusting(pki, with_cert=False))
        assert old.sock is not None
        old_sock = old.sock
        assert old_sock.getpeercert(binary_form=True) == der(pki.server)

        served.renew(renewed, trigger)
        served.wait_logged(RELOADED)
        # Each process logged its swap: whichever worker the kernel picks, it is new.
        for _ in range(8):
            assert served.peer(trusting(pki, with_cert=False)) == der(renewed)

        answered(old)  # opened before: still answered, on the same socket, as before
        assert old.sock is old_sock
        assert old_sock.getpeercert(binary_form=True) == der(pki.server)
        old.close()
        assert served.daemon.proc.poll() is None and served.daemon.proc.pid == pid
    assert "Traceback" not in served.log(), served.log()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_key_of_another_certificate_keeps_the_old_pair_and_says_why(
    pki: Pki, tmp_path: Path, workers: int
) -> None:
    renewed = pki.renew(tmp_path / "renewed")
    mismatched = Issued(cert=renewed.cert, key=pki.client.key)
    with Served(tmp_path, pki, workers=workers, poll=3600.0) as served:
        served.renew(mismatched, "sighup")
        lines = served.wait_logged(REFUSED)
        for line in lines:
            assert "ERROR servicegroup.server.tls: TLS reload (" in line
            assert f"[api] ssl_keyfile {served.key} is not the private key of" in line
            assert f"[api] ssl_certfile {served.cert}" in line
        for _ in range(8):
            assert served.peer(trusting(pki, with_cert=False)) == der(pki.server)
        # The pair made whole again (the right key lands) is taken at the next SIGHUP.
        served.renew(renewed, "sighup")
        served.wait_logged(RELOADED)
        assert served.peer(trusting(pki, with_cert=False)) == der(renewed)
    assert "Traceback" not in served.log(), served.log()


@pytest.mark.parametrize("trigger", ["file", "sighup"])
def test_mutual_tls_honours_a_new_ca_file_with_a_ca_added_or_dropped(
    pki: Pki, tmp_path: Path, trigger: str
) -> None:
    poll = 0.02 if trigger == "file" else 3600.0
    with Served(tmp_path, pki, workers=1, poll=poll, client_cert="required") as served:
        served.peer(trusting(pki), tls12=True)
        with pytest.raises(ssl.SSLError):  # signed by a CA the daemon does not trust yet
            served.peer(trusting(pki, issued=pki.stranger), tls12=True)

        bundle = tmp_path / "bundle.pem"
        bundle.write_text(pki.ca.read_text() + pki.other_ca.read_text())
        moved_over(bundle, served.ca)
        if trigger == "sighup":
            served.daemon.signal(signal.SIGHUP)
        served.wait_logged(RELOADED)
        served.peer(trusting(pki, issued=pki.stranger), tls12=True)
        served.peer(trusting(pki), tls12=True)

        moved_over(pki.other_ca, served.ca)  # the first CA dropped: its clients refused
        if trigger == "sighup":
            served.daemon.signal(signal.SIGHUP)
        served.wait_logged(RELOADED, rounds=2)
        with pytest.raises(ssl.SSLError):
            served.peer(trusting(pki), tls12=True)
        served.peer(trusting(pki, issued=pki.stranger), tls12=True)
    assert "Traceback" not in served.log(), served.log()
