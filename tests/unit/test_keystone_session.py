"""OpenStack credentials on the command line, and the client's token from a keystoneauth Session.

Keystone itself is in tests/functional/test_keystone_clients.py; here the
errors a user meets before any request, and the 401 handling against a
stand-in auth plugin (keystoneauth's public plugin interface) and
httpx.MockTransport.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from keystoneauth1 import exceptions as ksa_exc
from keystoneauth1 import plugin, session
from keystoneauth1.identity import v3

from servicegroup import cli
from servicegroup.client import Client
from servicegroup.exceptions import BackendError, InvalidInput, Unauthorized
from servicegroup.keystone_session import session_from_arguments
from tests.unit.test_cli import assert_one_line_error, run

URL = "http://127.0.0.1:1/v3"  # never contacted: each case fails before
COMPLETE = [
    "--os-auth-url", URL, "--os-username", "agent", "--os-password", "pw-1",
    "--os-user-domain-name", "Default", "--os-project-name", "fleet",
    "--os-project-domain-name", "Default",
]  # fmt: skip


@pytest.fixture(autouse=True)
def no_openrc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's sourced openrc must not fill in what a case leaves out."""
    for name in list(os.environ):
        if name.startswith("OS_") or name == "SERVICEGROUP_TOKEN":
            monkeypatch.delenv(name)


AGENT = [
    "agent", "--daemon-url", "http://127.0.0.1:1", "--auth-strategy", "keystone",
    "--host", "h", "--binary", "b", "--check", "true",
]  # fmt: skip


def without(flag: str) -> list[str]:
    at = COMPLETE.index(flag)
    return COMPLETE[:at] + COMPLETE[at + 2 :]


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("--os-auth-url", "--os-auth-url ($OS_AUTH_URL): is required"),
        ("--os-password", "--os-password ($OS_PASSWORD): is required"),
        ("--os-username", "--os-username ($OS_USERNAME): is required (or --os-user-id"),
        ("--os-user-domain-name", "--os-user-domain-name ($OS_USER_DOMAIN_NAME): is required"),
        ("--os-project-name", "--os-project-name ($OS_PROJECT_NAME): is required"),
        ("--os-project-domain-name", "--os-project-domain-name ($OS_PROJECT_DOMAIN_NAME)"),
    ],
)
def test_a_missing_credential_is_named_in_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], missing: str, named: str
) -> None:
    code, out, err = run(capsys, *AGENT, *without(missing))
    assert code == 2 and out == ""
    assert_one_line_error(err, named)
    assert "pw-1" not in err


def test_the_environment_stands_for_the_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """OS_* as an openrc sets them: only the password is left out, and named."""
    for flag, value in zip(COMPLETE[::2], COMPLETE[1::2], strict=True):
        if flag != "--os-password":
            monkeypatch.setenv(flag.removeprefix("--").replace("-", "_").upper(), value)
    code, _, err = run(capsys, *AGENT)
    assert code == 2
    assert_one_line_error(err, "--os-password ($OS_PASSWORD): is required")


def test_an_unknown_auth_type_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *AGENT, "--os-auth-type", "kerberos5")
    assert code == 2
    assert_one_line_error(err, "--os-auth-type: unknown auth type 'kerberos5'", "v3password")


def test_an_application_credential_needs_no_user_or_project(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an application credential's openrc sets it (keystoneauth spells these flags
    --os-application_credential_id, with underscores; the variables are as usual)."""
    monkeypatch.setenv("OS_AUTH_TYPE", "v3applicationcredential")
    monkeypatch.setenv("OS_AUTH_URL", URL)
    monkeypatch.setenv("OS_APPLICATION_CREDENTIAL_ID", "ac-1")
    code, _, err = run(capsys, *AGENT)
    assert code == 2
    assert_one_line_error(err, "($OS_APPLICATION_CREDENTIAL_SECRET): is required")
    monkeypatch.setenv("OS_APPLICATION_CREDENTIAL_SECRET", "s3cret")
    args = cli.build_parser().parse_args(AGENT)
    keystone = session_from_arguments(args, timeout=1.0)  # complete: no user, no project
    assert isinstance(keystone.auth, v3.ApplicationCredential)


def test_the_agent_takes_either_a_token_or_credentials(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICEGROUP_TOKEN", "fixed-token-1")
    code, _, err = run(capsys, *AGENT, *COMPLETE)
    assert code == 2
    assert_one_line_error(err, "token: give either a token", "or OpenStack credentials")
    assert "fixed-token-1" not in err and "pw-1" not in err


def test_other_commands_do_not_load_keystoneauth(capsys: pytest.CaptureFixture[str]) -> None:
    """Its import costs ~0.3 s: only agent and keystone-token pay it (checked in a child)."""
    import subprocess
    import sys

    code = (
        "import sys; from servicegroup import cli; cli.build_parser().parse_args"
        "(['service', 'list']); print('keystoneauth1' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# -- the client's token from a session ---------------------------------------------


class Tokens(plugin.BaseAuthPlugin):
    """A stand-in auth plugin: token N until invalidated, then N + 1."""

    def __init__(self, renewable: bool = True) -> None:
        super().__init__()
        self.number = 1
        self.renewable = renewable
        self.invalidations = 0
        self.failure: Exception | None = None

    def get_headers(self, session: session.Session, **kwargs: Any) -> dict[str, str]:
        if self.failure is not None:
            raise self.failure
        return {"X-Auth-Token": f"token-{self.number}"}

    def invalidate(self) -> bool:
        self.invalidations += 1
        if self.renewable:
            self.number += 1
        return self.renewable


def daemon_accepting(token: str, seen: list[str]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        sent = request.headers.get("X-Auth-Token", "")
        seen.append(sent)
        if sent != token:
            return httpx.Response(401, json={"error": {"code": 401, "message": "refused"}})
        return httpx.Response(200, json={"driver": "db"})

    return httpx.MockTransport(answer)


@pytest.fixture
def tokens() -> Iterator[Tokens]:
    yield Tokens()


def test_a_401_renews_the_token_and_sends_the_request_once_more(tokens: Tokens) -> None:
    seen: list[str] = []
    transport = daemon_accepting("token-2", seen)
    with Client("http://sg", keystone_session=tokens, transport=transport) as client:
        client.health()
        client.health()
    assert seen == ["token-1", "token-2", "token-2"]
    assert tokens.invalidations == 1


def test_a_token_that_cannot_change_is_sent_once(tokens: Tokens) -> None:
    tokens.renewable = False
    seen: list[str] = []
    transport = daemon_accepting("token-2", seen)
    with (
        Client(
            "http://sg", keystone_session=session.Session(auth=tokens), transport=transport
        ) as client,
        pytest.raises(Unauthorized),
    ):
        client.health()
    assert seen == ["token-1"]


def test_requests_refused_together_share_one_renewal(tokens: Tokens) -> None:
    both_sent = threading.Barrier(2, timeout=30)
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent = request.headers["X-Auth-Token"]
        seen.append(sent)
        if sent == "token-1":
            both_sent.wait()  # both were refused with the same token
            return httpx.Response(401, json={"error": {"code": 401, "message": "refused"}})
        return httpx.Response(200, json={"driver": "db"})

    with Client("http://sg", keystone_session=tokens, transport=httpx.MockTransport(answer)) as c:
        threads = [threading.Thread(target=c.health) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(seen) == ["token-1", "token-1", "token-2", "token-2"]
    assert tokens.invalidations == 1


@pytest.mark.parametrize(
    ("failure", "raised", "text"),
    [
        (ksa_exc.ConnectFailure("connection refused"), BackendError, "keystone: "),
        (ksa_exc.DiscoveryFailure("no versions"), BackendError, "keystone: "),
        (ksa_exc.Unauthorized("bad password", http_status=401), Unauthorized, "(HTTP 401)"),
        (ksa_exc.InternalServerError("oops", http_status=500), BackendError, "HTTP 500"),
    ],
)
def test_keystones_failures_are_servicegroups_errors(
    tokens: Tokens, failure: Exception, raised: type[Exception], text: str
) -> None:
    tokens.failure = failure
    transport = daemon_accepting("token-1", [])
    with (
        Client("http://sg", keystone_session=tokens, transport=transport) as client,
        pytest.raises(raised, match=text.replace("(", r"\(").replace(")", r"\)")),
    ):
        client.health()


def test_a_session_excludes_a_token_and_another_strategy(tokens: Tokens) -> None:
    with pytest.raises(InvalidInput) as caught:
        Client("http://sg", "fixed", keystone_session=tokens)
    assert caught.value.field == "token"
    with pytest.raises(InvalidInput) as caught:
        Client("http://sg", auth_strategy="token", keystone_session=tokens)
    assert caught.value.field == "auth_strategy"
    with pytest.raises(InvalidInput) as caught:
        Client("http://sg", keystone_session="a token, not a session")  # type: ignore[arg-type]
    assert caught.value.field == "keystone_session"
    with pytest.raises(InvalidInput) as caught:
        Client("http://sg", keystone_session=session.Session())
    assert "auth plugin" in str(caught.value)


def test_an_environment_token_gives_way_to_a_session(
    tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICEGROUP_TOKEN", "from-the-environment")
    seen: list[str] = []
    transport = daemon_accepting("token-1", seen)
    with Client("http://sg", keystone_session=tokens, transport=transport) as client:
        client.health()
    assert seen == ["token-1"]


def test_a_password_plugin_is_taken_as_is() -> None:
    """keystoneauth's own plugin, unsent: building the client contacts nobody."""
    auth = v3.Password(auth_url=URL, username="u", password="p", user_domain_id="default")
    Client("http://sg", keystone_session=auth).close()


def test_keystones_tls_files_are_checked_before_any_sign_in(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    missing = tmp_path / "missing.pem"
    code, _, err = run(capsys, *AGENT, *COMPLETE, "--os-cacert", str(missing))
    assert code == 1
    assert_one_line_error(err, f"--os-cacert ($OS_CACERT): cannot read {missing}")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    code, _, err = run(capsys, *AGENT, *COMPLETE, "--os-cacert", str(not_pem))
    assert code == 1
    assert_one_line_error(err, "not a PEM bundle of CA certificates")
    code, _, err = run(capsys, *AGENT, *COMPLETE, "--os-key", str(not_pem))
    assert code == 2
    assert_one_line_error(err, "--os-key ($OS_KEY): only applies with --os-cert")
    import certifi

    args = cli.build_parser().parse_args([*AGENT, *COMPLETE, "--os-cacert", certifi.where()])
    assert session_from_arguments(args, timeout=1.0).verify == certifi.where()
