"""Bearer-token levels of the HTTP API, against the real app on a real socket.

Agent tokens may register, heartbeat and leave; admin tokens everything;
read tokens, once configured, guard reads and /metrics. No token at all:
401 with WWW-Authenticate; a token of the wrong kind: 403.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicegroup import ServiceGroup
from servicegroup.exceptions import ConfigError
from servicegroup.server import auth
from servicegroup.server.app import create_app
from tests.live import serve_in_thread

READ, AGENT, ADMIN = "read-tok-3f9a", "agent-tok-77c1", "admin-tok-0b2e"
BAD = "not-a-token-5d1e"
SECRETS = (READ, AGENT, ADMIN, BAD)


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture
def serve(
    sqlite_url: str, make_group: Callable[..., ServiceGroup]
) -> Iterator[Callable[..., httpx.Client]]:
    """Start the app with the given [api] token options; return an httpx client to it."""
    stack: list[Any] = []

    def start(**token_opts: list[str]) -> httpx.Client:
        group = make_group(sqlite_url, **{f"api__{k}": v for k, v in token_opts.items()})
        server = serve_in_thread(create_app(group))
        url = server.__enter__()
        stack.append(server)
        http = httpx.Client(base_url=url, timeout=10.0)
        stack.append(http)
        return http

    yield start
    for item in reversed(stack):
        if isinstance(item, httpx.Client):
            item.close()
        else:
            item.__exit__(None, None, None)


def assert_denied(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["field"] is None
    for secret in SECRETS:
        assert secret not in response.text
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def register(http: httpx.Client, token: str | None, host: str = "h") -> httpx.Response:
    return http.post("/v1/services", json={"host": host, "binary": "b"}, headers=bearer(token))


def test_no_tokens_configured_means_open(serve: Callable[..., httpx.Client]) -> None:
    http = serve()
    sid = register(http, None).json()["id"]
    assert http.post(f"/v1/services/{sid}/heartbeat").status_code == 204
    assert http.patch(f"/v1/services/{sid}", json={"disabled": True}).status_code == 200
    assert http.get("/v1/services").status_code == 200
    assert http.delete(f"/v1/services/{sid}").status_code == 204


def test_agent_token_registers_beats_and_leaves_but_cannot_administer(
    serve: Callable[..., httpx.Client],
) -> None:
    http = serve(agent_tokens=[AGENT], admin_tokens=[ADMIN])
    created = register(http, AGENT)
    assert created.status_code == 201
    sid = created.json()["id"]
    agent = bearer(AGENT)
    assert http.post(f"/v1/services/{sid}/heartbeat", headers=agent).status_code == 204
    assert http.get(f"/v1/services/{sid}").json()["state"] == "up"
    assert http.post(f"/v1/services/{sid}/leave", headers=agent).status_code == 204
    assert http.get(f"/v1/services/{sid}").json()["state"] == "down"
    assert_denied(http.patch(f"/v1/services/{sid}", json={"disabled": True}, headers=agent), 403)
    assert_denied(http.delete(f"/v1/services/{sid}", headers=agent), 403)
    assert http.delete(f"/v1/services/{sid}", headers=bearer(ADMIN)).status_code == 204


def test_missing_or_unknown_token_is_401_before_anything_is_written(
    serve: Callable[..., httpx.Client],
) -> None:
    http = serve(agent_tokens=[AGENT], admin_tokens=[ADMIN])
    assert_denied(register(http, None), 401)
    assert_denied(register(http, BAD), 401)
    assert_denied(register(http, AGENT + "x"), 401)
    assert_denied(
        http.post(
            "/v1/services", json={"host": "h", "binary": "b"}, headers={"Authorization": AGENT}
        ),
        401,
    )  # not the Bearer scheme
    assert http.get("/v1/services").json() == {"services": [], "total": 0}
    sid = register(http, AGENT).json()["id"]
    for method, path in [
        ("POST", f"/v1/services/{sid}/heartbeat"),
        ("POST", f"/v1/services/{sid}/leave"),
        ("PATCH", f"/v1/services/{sid}"),
        ("DELETE", f"/v1/services/{sid}"),
    ]:
        assert_denied(http.request(method, path, json={}), 401)


def test_admin_token_may_do_everything(serve: Callable[..., httpx.Client]) -> None:
    http = serve(agent_tokens=[AGENT], admin_tokens=[ADMIN], read_tokens=[READ])
    admin = bearer(ADMIN)
    sid = register(http, ADMIN).json()["id"]
    assert http.post(f"/v1/services/{sid}/heartbeat", headers=admin).status_code == 204
    assert http.post(f"/v1/services/{sid}/leave", headers=admin).status_code == 204
    patched = http.patch(f"/v1/services/{sid}", json={"forced_down": True}, headers=admin)
    assert patched.json()["forced_down"] is True
    assert http.get("/v1/services", headers=admin).status_code == 200
    assert http.get("/metrics", headers=admin).status_code == 200
    assert http.delete(f"/v1/services/{sid}", headers=admin).status_code == 204


def test_reads_are_open_without_read_tokens(serve: Callable[..., httpx.Client]) -> None:
    http = serve(agent_tokens=[AGENT])
    sid = register(http, AGENT).json()["id"]
    assert http.get("/v1/services").status_code == 200
    assert http.get(f"/v1/services/{sid}").status_code == 200
    assert http.get("/v1/versions/b").status_code == 200
    assert http.get("/v1/binaries/b/times").status_code == 200
    assert http.get("/metrics").status_code == 200


def test_read_tokens_guard_reads_and_metrics_but_not_healthz(
    serve: Callable[..., httpx.Client],
) -> None:
    http = serve(agent_tokens=[AGENT], admin_tokens=[ADMIN], read_tokens=[READ])
    sid = register(http, AGENT).json()["id"]
    reads = ("/v1/services", f"/v1/services/{sid}", "/v1/versions/b", "/v1/binaries/b/times")
    for path in (*reads, "/metrics"):
        assert_denied(http.get(path), 401)
        assert_denied(http.get(path, headers=bearer(BAD)), 401)
        for token in (READ, AGENT, ADMIN):
            assert http.get(path, headers=bearer(token)).status_code == 200, (path, token)
    assert http.get("/healthz").status_code == 200
    assert http.get("/openapi.json").status_code == 200
    assert_denied(register(http, READ, host="other"), 403)
    assert_denied(http.post(f"/v1/services/{sid}/heartbeat", headers=bearer(READ)), 403)


def test_only_read_tokens_lock_writes_for_everyone(serve: Callable[..., httpx.Client]) -> None:
    """Tokens of any kind turn authentication on; no agent token means no agent writes."""
    http = serve(read_tokens=[READ])
    assert_denied(register(http, None), 401)
    assert_denied(register(http, READ), 403)


def test_every_configured_token_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    tokens = auth.Tokens(read=(b"r1",), agent=(b"a1", b"a2"), admin=(b"d1",))
    for presented, level in [
        ("r1", auth.Level.READ),  # the very first token matches: the others are still compared
        ("a2", auth.Level.AGENT),
        ("d1", auth.Level.ADMIN),
        ("nope", None),
    ]:
        calls.clear()
        assert tokens.level_of(presented) is level
        assert sorted(b for _, b in calls) == [b"a1", b"a2", b"d1", b"r1"]


def test_one_token_in_two_levels_grants_the_higher() -> None:
    tokens = auth.Tokens(agent=(b"t",), admin=(b"t",))
    assert tokens.level_of("t") is auth.Level.ADMIN


def test_token_files_are_read_with_comments_and_blank_lines(
    tmp_path: Path, sqlite_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    agents = tmp_path / "agents"
    agents.write_text("# fleet agents\n\n  tok-one  \ntok-two\n   # indented comment\ntok-one\n")
    admins = tmp_path / "admins"
    admins.write_text("adm\n")
    group = make_group(
        sqlite_url,
        api__agent_tokens=["inline"],
        api__agent_token_files=[str(agents)],
        api__admin_token_files=[str(admins)],
    )
    tokens = auth.Tokens.from_conf(group.conf)
    assert tokens.agent == (b"inline", b"tok-one", b"tok-two")
    assert tokens.admin == (b"adm",)
    assert tokens.read == ()
    assert tokens.enabled and tokens.guards_writes


def test_a_missing_token_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    with pytest.raises(ConfigError, match="no-such-file"):
        auth.read_token_file(str(missing))


def test_a_token_file_with_only_comments_configures_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# none yet\n\n")
    assert auth.read_token_file(str(path)) == []


def test_tokens_never_reach_the_log(
    serve: Callable[..., httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    http = serve(agent_tokens=[AGENT], admin_tokens=[ADMIN], read_tokens=[READ])
    for token in (*SECRETS, None):
        sid = register(http, token).json().get("id", "00000000-0000-0000-0000-000000000000")
        http.post(f"/v1/services/{sid}/heartbeat", headers=bearer(token))
        http.patch(f"/v1/services/{sid}", json={"version": -1}, headers=bearer(token))
        http.get("/v1/services", params={"state": "bad"}, headers=bearer(token))
        http.get("/metrics", headers=bearer(token))
    assert caplog.records, "the app logged nothing at DEBUG: the check would be vacuous"
    for secret in SECRETS:
        assert secret not in caplog.text


LOOPBACK = ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"]
BEYOND = ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "sg.example"]
WRITE_TOKENS = [auth.Tokens(agent=(b"a",)), auth.Tokens(admin=(b"d",))]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_may_be_open_or_plain(host: str) -> None:
    auth.check_exposure(host, 8797, auth.Tokens(), tls=False, insecure=False)
    auth.check_exposure(host, 8797, auth.Tokens(agent=(b"a",)), tls=False, insecure=False)


@pytest.mark.parametrize("host", BEYOND)
@pytest.mark.parametrize("tls", [False, True])
def test_beyond_loopback_an_open_api_is_refused(
    host: str, tls: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        auth.check_exposure(host, 8797, auth.Tokens(), tls=tls, insecure=False)
    with pytest.raises(ConfigError):  # read tokens guard reads only; writes need their own
        auth.check_exposure(host, 8797, auth.Tokens(read=(b"r",)), tls=tls, insecure=False)
    with caplog.at_level(logging.WARNING):
        auth.check_exposure(host, 8797, auth.Tokens(), tls=tls, insecure=True)
    assert "--insecure" in caplog.text


@pytest.mark.parametrize("host", BEYOND)
@pytest.mark.parametrize("tokens", WRITE_TOKENS)
def test_beyond_loopback_tokens_need_tls(host: str, tokens: auth.Tokens) -> None:
    with pytest.raises(ConfigError, match="tokens but no TLS") as caught:
        auth.check_exposure(host, 8797, tokens, tls=False, insecure=False)
    for named in ("ssl_certfile", "ssl_keyfile", "--insecure", "clear text"):
        assert named in str(caught.value)
    auth.check_exposure(host, 8797, tokens, tls=True, insecure=False)


def test_insecure_lets_tokens_through_in_clear_text_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        auth.check_exposure("0.0.0.0", 8797, WRITE_TOKENS[0], tls=False, insecure=True)
    assert [r.getMessage() for r in caplog.records] == [
        "listening on 0.0.0.0:8797 with tokens but no TLS (--insecure): bearer tokens would "
        "cross the network in clear text, for anyone on the way to read"
    ]


def test_insecure_warns_of_each_risk_it_takes(caplog: pytest.LogCaptureFixture) -> None:
    # Read tokens only: writes are open, and the read tokens travel in clear text.
    with caplog.at_level(logging.WARNING):
        auth.check_exposure("::", 8797, auth.Tokens(read=(b"r",)), tls=False, insecure=True)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "no agent or admin tokens" in messages[0] and "no TLS" in messages[1]


GUARDED = [
    ("/v1/services", "post"),
    ("/v1/services", "get"),
    ("/v1/services/{id}/leave", "post"),
    ("/v1/services/{id}", "patch"),
    ("/v1/services/{id}", "delete"),
    ("/metrics", "get"),
]
READS = {("/v1/services", "get"), ("/metrics", "get")}


def test_openapi_documents_bearer_and_the_levels(serve: Callable[..., httpx.Client]) -> None:
    doc = serve(read_tokens=[READ], agent_tokens=[AGENT], admin_tokens=[ADMIN])
    doc = doc.get("/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    for path, method in GUARDED:
        operation = doc["paths"][path][method]
        assert operation["security"] == [{"bearer": []}], (path, method)
        assert {"401", "403"} <= set(operation["responses"]), (path, method)
    assert "security" not in doc["paths"]["/healthz"]["get"]


def test_openapi_declares_security_only_where_this_daemon_checks(
    serve: Callable[..., httpx.Client],
) -> None:
    """The document describes this daemon: a fuzzer must not expect 401s it never sends."""
    open_doc = serve().get("/openapi.json").json()
    for path, method in GUARDED:
        assert "security" not in open_doc["paths"][path][method], (path, method)
    writes_only = serve(agent_tokens=[AGENT]).get("/openapi.json").json()
    for path, method in GUARDED:
        declared = "security" in writes_only["paths"][path][method]
        assert declared == ((path, method) not in READS), (path, method)
