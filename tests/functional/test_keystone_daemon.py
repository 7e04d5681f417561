"""The real daemon under `[api] auth_strategy = keystone`, against a real Keystone.

One Keystone per module (tests/keystone_server.py), with 10-second tokens so
the expired-token test waits seconds, not an hour. Two daemons share it:
`cached` trusts a validated token for 300 s, `uncached` asks Keystone on
every request (token_cache_ttl = 0), which is what shows the cache's one
effect on revocation.

Users, all in the `fleet` project the daemons accept unless said otherwise:
reader (reader), agent (service), admin (admin, which Keystone expands to
member and reader), outsider (admin, but of another project); the daemons
themselves sign in as sg-service (service role in `service`), which
Keystone's policy lets validate tokens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from servicegroup.client import Client
from servicegroup.exceptions import Forbidden
from servicegroup.service import State
from tests.functional.daemon import Daemon, config_text, free_port
from tests.functional.test_daemon import migrated_sqlite
from tests.keystone_server import Keystone, daemon_options, keystone_or_fail

TOKEN_LIFETIME = 10  # seconds, Keystone's [token] expiration in this module
PASSWORD = "user-secret-7c1"


@dataclass
class Deployment:
    keystone: Keystone
    fleet: str  # project id
    other: str
    cached: Daemon
    uncached: Daemon

    def token(self, user: str, project_id: str | None = None) -> str:
        return self.keystone.token(user, PASSWORD, project_id=project_id or self.fleet)


def _daemon(tmp: Path, db_url: str, keystone: Keystone, fleet: str, cache_ttl: float) -> Daemon:
    port = free_port()
    config = tmp / "sg.conf"
    config.write_text(
        config_text(db_url, port, daemon_options(keystone, fleet, PASSWORD, cache_ttl))
    )
    return Daemon(config, port, tmp / "daemon.log").start()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("keystone")
    with keystone_or_fail(tmp, token_expiration=TOKEN_LIFETIME) as keystone:
        fleet = keystone.project("fleet")
        other = keystone.project("other")
        keystone.service_user(PASSWORD)
        keystone.user("reader", PASSWORD, fleet, "reader")
        keystone.user("agent", PASSWORD, fleet, "service")
        keystone.user("admin-of-fleet", PASSWORD, fleet, "admin")
        keystone.user("outsider", PASSWORD, other, "admin")
        db_url = migrated_sqlite(tmp / "sg.sqlite")  # one fleet, seen through both daemons
        cached = _daemon(tmp_path_factory.mktemp("cached"), db_url, keystone, fleet, 300.0)
        uncached = _daemon(tmp_path_factory.mktemp("uncached"), db_url, keystone, fleet, 0.0)
        try:
            cached.wait_ready()
            uncached.wait_ready()
            yield Deployment(keystone, fleet, other, cached, uncached)
        finally:
            cached.stop()
            uncached.stop()
        assert "keystone-admin-secret" not in cached.log() + uncached.log()


def _register(daemon: Daemon, token: str, host: str) -> httpx.Response:
    """POST /v1/services as a plain registration: the fast route (fast_routes.py)."""
    return httpx.post(
        f"{daemon.url}/v1/services",
        json={"host": host, "binary": "nova-compute"},
        headers={"X-Auth-Token": token},
    )


def _codes(
    daemon: Daemon, token: str, service_id: str, header: str = "X-Auth-Token"
) -> dict[str, int]:
    """One request of each level; the agent level both through FastAPI and the fast routes.

    The token goes in `header`: X-Auth-Token, or Authorization as a bearer token.
    """
    headers = {header: token if header == "X-Auth-Token" else f"Bearer {token}"}
    url = daemon.url
    return {
        "read": httpx.get(f"{url}/v1/services", headers=headers).status_code,
        "metrics": httpx.get(f"{url}/metrics", headers=headers).status_code,
        "beat (fast route)": httpx.post(
            f"{url}/v1/services/{service_id}/heartbeat", headers=headers
        ).status_code,
        "beats (FastAPI)": httpx.post(
            f"{url}/v1/heartbeats", json={"ids": [service_id]}, headers=headers
        ).status_code,
        "admin": httpx.patch(
            f"{url}/v1/services/{service_id}", json={"disabled": False}, headers=headers
        ).status_code,
    }


@pytest.fixture(scope="module")
def service_id(deployment: Deployment) -> str:
    response = _register(deployment.cached, deployment.token("agent"), "compute-1")
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# _codes()'s requests: read, metrics, beat (fast route), beats (FastAPI), admin.
@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("reader", (200, 200, 403, 403, 403)),
        ("agent", (200, 200, 204, 200, 403)),
        ("admin-of-fleet", (200, 200, 204, 200, 200)),
    ],
)
@pytest.mark.parametrize("header", ["X-Auth-Token", "Authorization"])
def test_each_role_gets_exactly_its_level(
    deployment: Deployment, service_id: str, user: str, expected: tuple[int, ...], header: str
) -> None:
    token = deployment.token(user)
    for daemon in (deployment.cached, deployment.uncached):
        codes = _codes(daemon, token, service_id, header)
        assert tuple(codes.values()) == expected, codes


def test_registration_needs_the_agent_level(deployment: Deployment) -> None:
    assert _register(deployment.cached, deployment.token("reader"), "compute-r").status_code == 403
    assert _register(deployment.uncached, deployment.token("agent"), "compute-a").status_code == 201


def test_a_token_of_another_project_is_forbidden(deployment: Deployment, service_id: str) -> None:
    token = deployment.token("outsider", deployment.other)
    for daemon in (deployment.cached, deployment.uncached):
        codes = _codes(daemon, token, service_id)
        assert set(codes.values()) == {403}, codes
        response = httpx.get(f"{daemon.url}/v1/services", headers={"X-Auth-Token": token})
        assert response.json()["error"]["message"] == "this token does not allow reading"


def test_the_http_client_speaks_keystone(deployment: Deployment) -> None:
    """Client(auth_strategy="keystone") sends X-Auth-Token; each level gets its own errors."""
    url = deployment.cached.url
    with Client(url, deployment.token("agent"), auth_strategy="keystone") as agent:
        service = agent.register("compute-client", "nova-compute")
        agent.heartbeat(service)
        assert agent.get(service).state is State.UP
        with pytest.raises(Forbidden):
            agent.set_disabled(service, True, "not an admin")
    with Client(url, deployment.token("admin-of-fleet"), auth_strategy="keystone") as admin:
        assert admin.set_disabled(service, True, "maintenance").disabled is True
    with Client(url, deployment.token("reader")) as bearer:
        # The default strategy sends the token as Authorization: Bearer, which a daemon
        # under keystone takes as well, for clients that can send nothing else.
        assert bearer.get(service).service.disabled is True
        with pytest.raises(Forbidden):
            bearer.heartbeat(service)


def test_no_token_and_unknown_tokens_are_unauthorized(deployment: Deployment) -> None:
    daemon = deployment.uncached
    response = httpx.get(f"{daemon.url}/v1/services")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'Keystone uri="{deployment.keystone.url}"'
    bogus = {"X-Auth-Token": "gAAAAA-not-a-keystone-token"}
    response = httpx.get(f"{daemon.url}/v1/services", headers=bogus)
    assert response.status_code == 401
    assert "gAAAAA" not in response.text
    bogus_bearer = {"Authorization": "Bearer gAAAAA-not-a-keystone-token"}
    assert httpx.get(f"{daemon.url}/v1/services", headers=bogus_bearer).status_code == 401
    assert httpx.get(f"{daemon.url}/healthz").status_code == 200  # OPEN stays open


def test_two_different_tokens_are_refused_whichever_is_valid(
    deployment: Deployment, service_id: str
) -> None:
    """X-Auth-Token and Authorization: Bearer naming two tokens: 401, never one of them."""
    admin, reader = deployment.token("admin-of-fleet"), deployment.token("reader")
    for x_auth, bearer in ((admin, reader), (reader, admin), (admin, "gAAAAA-bogus")):
        headers = {"X-Auth-Token": x_auth, "Authorization": f"Bearer {bearer}"}
        for daemon in (deployment.cached, deployment.uncached):
            read = httpx.get(f"{daemon.url}/v1/services", headers=headers)
            beat = httpx.post(f"{daemon.url}/v1/services/{service_id}/heartbeat", headers=headers)
            assert (read.status_code, beat.status_code) == (401, 401)
            message = read.json()["error"]["message"]
            assert message == beat.json()["error"]["message"]
            assert "carry different tokens" in message
            assert read.headers["WWW-Authenticate"].startswith("Keystone")
            assert admin not in read.text and reader not in read.text
    same = {"X-Auth-Token": reader, "Authorization": f"Bearer {reader}"}
    assert httpx.get(f"{deployment.cached.url}/v1/services", headers=same).status_code == 200


def test_a_revoked_token_is_refused_once_the_cache_lets_go(
    deployment: Deployment, service_id: str
) -> None:
    token = deployment.token("agent")
    beat = f"/v1/services/{service_id}/heartbeat"
    headers = {"X-Auth-Token": token}
    for daemon in (deployment.cached, deployment.uncached):
        assert httpx.post(daemon.url + beat, headers=headers).status_code == 204
    deployment.keystone.revoke(token)
    assert not deployment.keystone.is_valid(token)
    # token_cache_ttl = 0: Keystone is asked again, and refuses it.
    assert httpx.post(deployment.uncached.url + beat, headers=headers).status_code == 401
    # token_cache_ttl = 300: the daemon trusts what Keystone said minutes ago. This is the
    # documented price of the cache (doc/operations.md): revocation takes up to the TTL.
    assert httpx.post(deployment.cached.url + beat, headers=headers).status_code == 204


def test_an_expired_token_is_refused_even_while_cached(
    deployment: Deployment, service_id: str
) -> None:
    token = deployment.token("agent")
    headers = {"X-Auth-Token": token}
    read = f"{deployment.cached.url}/v1/services/{service_id}"
    assert httpx.get(read, headers=headers).status_code == 200  # now in the 300 s cache
    started = time.monotonic()
    while deployment.keystone.is_valid(token):
        assert time.monotonic() - started < 3 * TOKEN_LIFETIME, "Keystone never expired it"
        time.sleep(0.5)
    # The cache entry ends with the token's own expires_at, not the TTL.
    assert httpx.get(read, headers=headers).status_code == 401
    assert httpx.get(f"{deployment.uncached.url}/v1/services", headers=headers).status_code == 401


def test_a_daemon_without_its_project_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "sg.conf"
    config.write_text(
        f"[database]\nconnection = {migrated_sqlite(tmp_path / 'sg.sqlite')}\n"
        f"[api]\nhost = 127.0.0.1\nport = {free_port()}\nauth_strategy = keystone\n"
        "[keystone_authtoken]\nauth_url = http://127.0.0.1:1/v3\nusername = u\n"
        f"password = {PASSWORD}\n"
    )
    proc = Daemon(config, 0, tmp_path / "daemon.log").start()
    try:
        assert proc.wait_exit() == 1
    finally:
        proc.stop()
    lines = proc.log().strip().splitlines()
    assert lines == [
        "servicegroup: [keystone_authtoken] accepted_project_id is required with "
        "[api] auth_strategy = keystone"
    ]
