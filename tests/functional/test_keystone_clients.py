"""Clients of a keystone daemon that sign in themselves, past their tokens' expiry.

One real Keystone (tests/keystone_server.py) whose tokens live 10 seconds,
so "past expiry" is seconds away, and one daemon under `[api] auth_strategy
= keystone` that asks Keystone on every request (token_cache_ttl = 0): an
expired or revoked token is refused at once, with a 401.

- Client(keystone_session=...): a token the daemon refuses, expired or
  revoked, is dropped and the request sent again with a new one. The plugin
  is made with reauthenticate=False, so keystoneauth never renews on its
  own and each renewal seen here is the client's answer to a 401.
- `servicegroup agent` with --os-* credentials: beats on through several
  token lifetimes (with 10-second tokens keystoneauth signs in again
  before every request; with an hour's, two minutes before expiry).
- `servicegroup keystone-token --renew`: a new valid token in the file
  before the old one expires, mode 0600, never a token on its output.

Waits are on conditions (a token no longer valid, a file changed, a later
heartbeat), each with a generous deadline that only a failure reaches.
"""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from keystoneauth1.identity import v3
from keystoneauth1.session import Session

from servicegroup.client import Client
from servicegroup.exceptions import Unauthorized
from servicegroup.service import State
from tests.functional.daemon import Daemon, free_port
from tests.functional.test_daemon import migrated_sqlite
from tests.keystone_server import ADMIN_PASSWORD, Keystone, keystone_or_fail

SCRIPT = Path(sys.executable).parent / "servicegroup"
TOKEN_LIFETIME = 10  # seconds, Keystone's [token] expiration in this module
PASSWORD = "client-secret-5e2"
FERNET_PREFIX = "gAAAAA"  # every Fernet token starts so: no token may be printed


@dataclass
class Deployment:
    keystone: Keystone
    fleet: str  # project id
    daemon: Daemon

    def password_auth(self, user: str, **options: Any) -> v3.Password:
        return v3.Password(
            auth_url=self.keystone.url,
            username=user,
            password=PASSWORD,
            user_domain_id="default",
            project_id=self.fleet,
            **options,
        )

    def credentials_env(self, user: str) -> dict[str, str]:
        """An openrc's variables: what `openstack` and these commands read."""
        return self.keystone.openrc(user, PASSWORD, "fleet")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("keystone-clients")
    with keystone_or_fail(tmp, token_expiration=TOKEN_LIFETIME) as keystone:
        fleet = keystone.project("fleet")
        service = keystone.project("service")
        keystone.user("sg-service", PASSWORD, service, "service")
        keystone.user("agent", PASSWORD, fleet, "service")
        keystone.user("admin-of-fleet", PASSWORD, fleet, "admin")
        port = free_port()
        config = tmp / "sg.conf"
        config.write_text(
            f"[database]\nconnection = {migrated_sqlite(tmp / 'sg.sqlite')}\n"
            f"[api]\nhost = 127.0.0.1\nport = {port}\nauth_strategy = keystone\n"
            "[keystone_authtoken]\n"
            f"auth_url = {keystone.url}\nauth_type = password\n"
            f"username = sg-service\npassword = {PASSWORD}\nuser_domain_id = default\n"
            "project_name = service\nproject_domain_id = default\n"
            f"accepted_project_id = {fleet}\ntoken_cache_ttl = 0\n"
        )
        daemon = Daemon(config, port, tmp / "daemon.log").start()
        try:
            daemon.wait_ready()
            yield Deployment(keystone, fleet, daemon)
        finally:
            daemon.stop()


class Recording(httpx.HTTPTransport):
    """The real transport, noting each answer's status and the token it was sent with."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[int, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.sent.append((response.status_code, request.headers.get("X-Auth-Token", "")))
        return response


def wait_for(check: Callable[[], Any], what: str, deadline: float = 6 * TOKEN_LIFETIME) -> Any:
    started = time.monotonic()
    while not (result := check()):
        assert time.monotonic() - started < deadline, f"never happened: {what}"
        time.sleep(0.05)
    return result


@pytest.mark.parametrize("how", ["expired", "revoked"])
def test_a_refused_token_is_renewed_and_the_request_sent_once_more(
    deployment: Deployment, how: str
) -> None:
    session = Session(auth=deployment.password_auth("agent", reauthenticate=False))
    seen = Recording()
    with Client(deployment.daemon.url, keystone_session=session, transport=seen) as client:
        service = client.register(f"compute-{how}", "nova-compute")
        first = session.get_token()
        assert first is not None and seen.sent == [(201, first)]
        if how == "revoked":
            deployment.keystone.revoke(first)
        else:
            wait_for(lambda: not deployment.keystone.is_valid(first), "the token expired")
        seen.sent.clear()
        client.heartbeat(service)
        assert client.get(service).state is State.UP
    (refused, old), (beat, new), (read, again) = seen.sent
    assert (refused, old) == (401, first)
    assert beat == 204 and new != first and again == new and read == 200
    assert deployment.keystone.is_valid(new)


def test_a_second_401_is_the_answer(deployment: Deployment) -> None:
    """A token that cannot be renewed (a fixed one) is not sent twice."""
    from keystoneauth1.token_endpoint import Token

    token = deployment.keystone.token("agent", PASSWORD, project_id=deployment.fleet)
    deployment.keystone.revoke(token)
    seen = Recording()
    fixed = Token(deployment.daemon.url, token)
    with (
        Client(deployment.daemon.url, keystone_session=fixed, transport=seen) as client,
        pytest.raises(Unauthorized),
    ):
        client.get_all()
    assert seen.sent == [(401, token)]


def test_the_agent_beats_on_through_several_token_lifetimes(
    deployment: Deployment, tmp_path: Path
) -> None:
    log_file = tmp_path / "agent.log"
    argv = [
        str(SCRIPT), "agent", "--daemon-url", deployment.daemon.url, "--auth-strategy",
        "keystone", "--host", "compute-agent", "--binary", "nova-compute", "--check", "true",
        "--interval", "0.5", "--os-username", "agent",  # the rest from OS_* (an openrc)
    ]  # fmt: skip
    env = deployment.credentials_env("someone-else")  # the flag wins over $OS_USERNAME
    admin = Client(
        deployment.daemon.url,
        keystone_session=Session(auth=deployment.password_auth("admin-of-fleet")),
    )
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
    try:

        def last_beat() -> datetime | None:
            assert proc.poll() is None, log_file.read_text()
            found = admin.get_all(host="compute-agent")
            return found[0].last_heartbeat if found else None

        first = wait_for(last_beat, "the agent registered and beat")

        # Beats keep landing until three token lifetimes after the first: every token
        # the agent started with has expired by then, and so have two after it.
        def three_lifetimes_later() -> bool:
            beat = last_beat()
            return beat is not None and (beat - first).total_seconds() > 3 * TOKEN_LIFETIME

        wait_for(
            three_lifetimes_later,
            "heartbeats three token lifetimes after the first",
            deadline=12 * TOKEN_LIFETIME,
        )
        assert admin.get_all(host="compute-agent")[0].state is State.UP
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert admin.get_all(host="compute-agent")[0].state is State.DOWN  # it left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        admin.close()
    output = log_file.read_text()
    assert "lost connection" not in output and "WARNING" not in output, output
    assert FERNET_PREFIX not in output and PASSWORD not in output


def _keystone_token(
    deployment: Deployment, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(SCRIPT), "keystone-token", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or deployment.credentials_env("admin-of-fleet"),
    )


def test_keystone_token_writes_a_valid_token_to_a_0600_file(
    deployment: Deployment, tmp_path: Path
) -> None:
    output = tmp_path / "servicegroup.token"
    output.write_text("stale")
    output.chmod(0o644)  # replaced, not rewritten: the new file is 0600 whatever this was
    proc = _keystone_token(deployment, "--output", str(output))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    token = output.read_text()
    assert token.startswith(FERNET_PREFIX) and deployment.keystone.is_valid(token)
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["servicegroup.token"]
    printed = (out + err).decode()
    assert token not in printed and FERNET_PREFIX not in printed and PASSWORD not in printed
    # What Prometheus would send with it: the token opens the daemon.
    answer = httpx.get(f"{deployment.daemon.url}/metrics", headers={"X-Auth-Token": token})
    assert answer.status_code == 200


def test_keystone_token_refused_credentials_are_one_line_and_no_file(
    deployment: Deployment, tmp_path: Path
) -> None:
    output = tmp_path / "servicegroup.token"
    env = {**deployment.credentials_env("admin-of-fleet"), "OS_PASSWORD": "wrong-password-9"}
    proc = _keystone_token(deployment, "--output", str(output), env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and out == b""
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("servicegroup: error: Keystone at "), lines
    assert "refused the credentials (HTTP 401)" in lines[0]
    assert "wrong-password-9" not in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_keystone_token_renew_rewrites_the_file_before_expiry(
    deployment: Deployment, tmp_path: Path
) -> None:
    output = tmp_path / "servicegroup.token"
    # --debug: even keystoneauth's request logging must not show a token.
    proc = _keystone_token(deployment, "--output", str(output), "--renew", "--debug")
    try:
        tokens: list[str] = []
        expiries: list[datetime] = []
        for _ in range(3):  # the first token, then two renewals

            def changed() -> str | None:
                assert proc.poll() is None, proc.communicate()
                text = output.read_text() if output.exists() else ""
                return text if text and text not in tokens else None

            token = wait_for(changed, f"token {len(tokens) + 1} in {output}")
            written = datetime.fromtimestamp(output.stat().st_mtime).astimezone()
            if expiries:  # written while the one it replaces was still valid
                assert written < expiries[-1], (written, expiries)
            expiries.append(deployment.keystone.expires_at(token))  # valid, or this raises
            assert stat.S_IMODE(output.stat().st_mode) == 0o600
            tokens.append(token)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    printed = (out + err).decode()
    assert "renewed the Keystone token" in printed
    assert FERNET_PREFIX not in printed
    assert PASSWORD not in printed and ADMIN_PASSWORD not in printed
    assert not any(token in printed for token in tokens)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["servicegroup.token"]
