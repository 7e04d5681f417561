"""A real Keystone (the `keystone` package from PyPI) on SQLite, on a free port.

Bootstrapped as an operator would: `keystone-manage` db_sync, fernet_setup,
credential_setup and bootstrap (admin password, region, public endpoint),
then served by wsgiref in a subprocess (one request at a time: the tests
send one at a time). Users, projects and role assignments go through
Keystone's own REST API, as the bootstrapped admin.

Raises ServerUnavailable when Keystone cannot be set up: the tests fail in
CI and skip elsewhere (tests/servers.py).
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.servers import ServerUnavailable, free_port, wait_port

ADMIN_PASSWORD = "keystone-admin-secret"
# The user a servicegroup daemon signs in as to validate tokens (service_user()).
SERVICE_USER = "sg-service"
MANAGE = Path(sys.executable).parent / "keystone-manage"
START_TIMEOUT = 60.0

# keystone parses sys.argv itself, so the port comes in the environment.
_SERVE = textwrap.dedent(
    """
    import os
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from keystone.server.wsgi import initialize_public_application

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    app = initialize_public_application()
    make_server("127.0.0.1", int(os.environ["KS_PORT"]), app, handler_class=Quiet).serve_forever()
    """
)


class Keystone:
    """The running Keystone, and what the tests ask of it."""

    def __init__(self, url: str) -> None:
        self.url = url  # .../v3
        self.http = httpx.Client(base_url=url, timeout=30.0)
        self.admin_token()  # Keystone answers, and the bootstrap's admin can sign in

    def token(
        self,
        user: str,
        password: str,
        *,
        project_id: str | None = None,
        project_name: str | None = None,
    ) -> str:
        """A project-scoped token for `user`, by password."""
        project: dict[str, Any] = (
            {"id": project_id}
            if project_id
            else {"name": project_name, "domain": {"id": "default"}}
        )
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": project},
            }
        }
        response = self.http.post("/auth/tokens", json=body)
        response.raise_for_status()
        return response.headers["X-Subject-Token"]

    def admin_token(self) -> str:
        """A fresh one each time: the tests run Keystone with short-lived tokens."""
        return self.token("admin", ADMIN_PASSWORD, project_name="admin")

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(
            method, path, json=body, headers={"X-Auth-Token": self.admin_token()}
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def project(self, name: str) -> str:
        body = {"project": {"name": name, "domain_id": "default"}}
        return str(self._admin("POST", "/projects", body)["project"]["id"])

    def role_id(self, name: str) -> str:
        roles = self._admin("GET", f"/roles?name={name}")["roles"]
        return str(roles[0]["id"])

    def user(self, name: str, password: str, project_id: str, role: str) -> str:
        """A user with `role` on the project."""
        body = {"user": {"name": name, "password": password, "domain_id": "default"}}
        user_id = str(self._admin("POST", "/users", body)["user"]["id"])
        self._admin("PUT", f"/projects/{project_id}/users/{user_id}/roles/{self.role_id(role)}")
        return user_id

    def service_user(self, password: str) -> None:
        """SERVICE_USER, with the service role in a `service` project: Keystone's default
        policy lets it validate other users' tokens, as a daemon must."""
        self.user(SERVICE_USER, password, self.project("service"), "service")

    def revoke(self, token: str) -> None:
        """DELETE /v3/auth/tokens: Keystone refuses the token from now on."""
        self._admin_subject("DELETE", token).raise_for_status()

    def is_valid(self, token: str) -> bool:
        """What Keystone itself says of the token now (200, or 404 once expired or revoked)."""
        response = self._admin_subject("GET", token)
        if response.status_code == 404:
            return False
        response.raise_for_status()
        return True

    def expires_at(self, token: str) -> datetime:
        """The token's expires_at as Keystone reports it (the token must still be valid)."""
        response = self._admin_subject("GET", token)
        response.raise_for_status()
        return datetime.fromisoformat(response.json()["token"]["expires_at"])

    def _admin_subject(self, method: str, token: str) -> httpx.Response:
        headers = {"X-Auth-Token": self.admin_token(), "X-Subject-Token": token}
        return self.http.request(method, "/auth/tokens", headers=headers)

    def openrc(self, user: str, password: str, project_name: str) -> dict[str, str]:
        """The environment of an openrc for `user`: what `openstack` and our commands read."""
        return {
            **os.environ,
            "HOME": "/nonexistent",  # no developer's servicegroup.conf
            "OS_AUTH_URL": self.url,
            "OS_USERNAME": user,
            "OS_PASSWORD": password,
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_NAME": project_name,
            "OS_PROJECT_DOMAIN_NAME": "Default",
        }

    def close(self) -> None:
        self.http.close()


def daemon_options(
    keystone: Keystone, project_id: str, password: str, cache_ttl: float = 300.0
) -> dict[str, Any]:
    """A daemon's options (as config_text takes them) under auth_strategy = keystone:
    signed in as SERVICE_USER (Keystone.service_user), accepting `project_id`'s tokens."""
    group = "keystone_authtoken__"
    return {
        "api__auth_strategy": "keystone",
        f"{group}auth_url": keystone.url,
        f"{group}auth_type": "password",
        f"{group}username": SERVICE_USER,
        f"{group}password": password,
        f"{group}user_domain_id": "default",
        f"{group}project_name": "service",
        f"{group}project_domain_id": "default",
        f"{group}accepted_project_id": project_id,
        f"{group}token_cache_ttl": cache_ttl,
    }


def _manage(config: Path, *args: str) -> None:
    result = subprocess.run(
        [str(MANAGE), "--config-file", str(config), *args],
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace")[-2000:]
        raise ServerUnavailable(f"keystone-manage {args[0]} failed: {tail}")


@contextlib.contextmanager
def running_keystone(tmp: Path, token_expiration: int = 3600) -> Iterator[Keystone]:
    """Bootstrap and serve a Keystone whose tokens live `token_expiration` seconds."""
    if not MANAGE.exists():
        raise ServerUnavailable(f"keystone-manage not installed next to {sys.executable}")
    port = free_port()
    url = f"http://127.0.0.1:{port}/v3"
    for name in ("fernet-keys", "credential-keys"):
        (tmp / name).mkdir()
    config = tmp / "keystone.conf"
    config.write_text(
        f"[database]\nconnection = sqlite:///{tmp / 'keystone.sqlite'}\n"
        f"[token]\nprovider = fernet\nexpiration = {token_expiration}\n"
        f"[fernet_tokens]\nkey_repository = {tmp / 'fernet-keys'}\n"
        f"[credential]\nkey_repository = {tmp / 'credential-keys'}\n"
        # Keystone's own cache (it invalidates it on revocation): without it a token
        # validation is ~1,300 SQL queries on SQLite, ~0.45 s against ~13 ms here.
        "[cache]\nenabled = true\nbackend = dogpile.cache.memory\n"
        # bcrypt's fewest rounds: every sign-in checks a password, and the tests sign in
        # a lot (10-second tokens); the default 12 rounds cost ~0.3 s each on this CI.
        "[identity]\npassword_hash_rounds = 4\n"
    )
    owner = ["--keystone-user", getpass.getuser()]
    owner += ["--keystone-group", grp.getgrgid(os.getgid()).gr_name]
    _manage(config, "db_sync")
    _manage(config, "fernet_setup", *owner)
    _manage(config, "credential_setup", *owner)
    _manage(
        config,
        "bootstrap",
        "--bootstrap-password",
        ADMIN_PASSWORD,
        "--bootstrap-region-id",
        "RegionOne",
        "--bootstrap-public-url",
        url,
    )
    log_path = tmp / "keystone.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE],
            stdout=log,
            stderr=log,
            env={**os.environ, "KS_PORT": str(port), "OS_KEYSTONE_CONFIG_FILES": str(config)},
        )
    keystone: Keystone | None = None
    try:
        try:
            wait_port(port, START_TIMEOUT, proc)
            keystone = Keystone(url)
        except (ServerUnavailable, httpx.HTTPError) as exc:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServerUnavailable(f"keystone did not come up: {exc}\n{tail}") from None
        yield keystone
    finally:
        if keystone is not None:
            keystone.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def keystone_or_fail(tmp: Path, token_expiration: int = 3600) -> Iterator[Keystone]:
    """running_keystone for a fixture: one that cannot start fails the test under CI=true
    (and skips it elsewhere), as every missing backend does (tests/conftest.py)."""
    from tests.conftest import unavailable

    with contextlib.ExitStack() as stack:
        try:
            keystone = stack.enter_context(running_keystone(tmp, token_expiration))
        except ServerUnavailable as exc:
            unavailable("keystone", exc)
        yield keystone
