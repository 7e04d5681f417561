"""servicegroup.client against the real app on a real socket: results and error mapping.

The client must raise what the Python API raises for the same mistake, so
each error case is checked against the exception class and its fields.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from servicegroup import ServiceGroup, State
from servicegroup.agent import HttpTransport
from servicegroup.binary_times import Times
from servicegroup.client import REPORT_INTERVAL, TOKEN_ENV, Client
from servicegroup.exceptions import BackendError, Forbidden, InvalidInput, NotFound, Unauthorized
from servicegroup.server.app import create_app
from servicegroup.service import Service
from tests.functional.daemon import free_port
from tests.helpers import wait_for
from tests.live import serve_in_thread

AGENT, ADMIN = "agent-secret-1", "admin-secret-1"


@pytest.fixture
def url(sqlite_url: str, make_group: Callable[..., ServiceGroup]) -> Iterator[str]:
    group = make_group(sqlite_url, api__agent_tokens=[AGENT], api__admin_tokens=[ADMIN])
    with serve_in_thread(create_app(group)) as base:
        yield base


@pytest.fixture
def admin(url: str) -> Iterator[Client]:
    with Client(url, ADMIN) as client:
        yield client


def test_register_beat_get_list_update_versions_delete(admin: Client) -> None:
    created, new = admin.register_ex("h1", "nova-compute", topic="compute", version=4)
    sid = created.uuid
    assert new and created.topic == "compute"
    assert admin.get(sid).state is State.DOWN
    again, new = admin.register_ex("h1", "nova-compute", version=5)
    assert (again.uuid, new) == (sid, False)
    admin.heartbeat(sid)
    assert admin.get(sid).state is State.UP and admin.is_up(created)
    assert [s.service.uuid for s in admin.get_all(binary="nova-compute", state="up")] == [sid]
    assert admin.get_all(binary="nova-compute", host="other") == []
    assert admin.update(sid, disabled=True, disabled_reason="kernel").disabled is True
    assert admin.get_version_range("nova-compute") == (5, 5)
    admin.leave(sid)
    assert admin.get(sid).state is State.DOWN
    assert admin.get_max_version("nova-compute", up_only=True) is None
    assert admin.health()["driver"] == "db"
    admin.delete(sid)
    with pytest.raises(NotFound) as caught:
        admin.get(sid)
    assert (caught.value.kind, caught.value.key) == ("service", sid)
    assert not admin.is_up(sid)


def test_invalid_input_carries_the_field_and_the_rule(admin: Client) -> None:
    with pytest.raises(InvalidInput) as caught:
        admin.register("bad\nhost", "b")
    assert caught.value.field == "host"
    assert caught.value.rule == "must contain only printable characters"
    sid = admin.register("h", "b").uuid
    with pytest.raises(InvalidInput) as caught:
        admin.update(sid, version=-1)
    assert caught.value.field == "version"
    with pytest.raises(InvalidInput) as caught:  # 422: wrong JSON type
        admin.update(sid, disabled="yes")
    assert caught.value.field == "disabled"
    with pytest.raises(InvalidInput) as caught:
        admin.get_all(state="sideways")
    assert caught.value.field == "state"


def test_a_malformed_id_is_invalid_and_an_unknown_one_not_found(admin: Client) -> None:
    """As in-process: the id's rule is checked before anything is sent."""
    for call in (admin.heartbeat, admin.leave, admin.get, admin.delete):
        with pytest.raises(InvalidInput) as invalid:
            call("not-a-uuid")
        assert invalid.value.field == "id"
        with pytest.raises(NotFound):
            call(str(uuid.uuid4()))


def test_a_route_the_daemon_does_not_have_is_not_found_by_path(admin: Client) -> None:
    with pytest.raises(NotFound) as caught:
        admin._call("GET", "/v1/nowhere")
    assert (caught.value.kind, caught.value.key) == ("path", "/v1/nowhere")


def test_401_and_403_become_unauthorized_and_forbidden(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with Client(url) as anonymous, pytest.raises(Unauthorized):
        anonymous.register("h", "b")
    with Client(url, "wrong") as wrong, pytest.raises(Unauthorized):
        wrong.register("h", "b")
    with Client(url, AGENT) as agent:
        sid = agent.register("h", "b").uuid
        with pytest.raises(Forbidden) as caught:
            agent.delete(sid)
    assert AGENT not in str(caught.value)


def test_the_token_comes_from_the_environment(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, AGENT)
    with Client(url) as client:
        assert client.register("h-env", "b").host == "h-env"
    with Client(url, ADMIN) as client:  # the argument wins over the environment
        client.delete(client.register("h-env", "b"))


def test_the_token_travels_in_the_header_of_the_daemons_auth_strategy() -> None:
    seen: list[httpx.Headers] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json={"driver": "db"})

    for strategy in ("token", "keystone"):
        transport = httpx.MockTransport(answer)
        with Client("http://sg", "t0k3n", auth_strategy=strategy, transport=transport) as client:
            client.health()
    bearer, keystone = seen
    assert (bearer.get("authorization"), bearer.get("x-auth-token")) == ("Bearer t0k3n", None)
    assert (keystone.get("authorization"), keystone.get("x-auth-token")) == (None, "t0k3n")


def test_an_unknown_auth_strategy_names_the_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        Client("http://sg", "t0k3n", auth_strategy="kerberos")
    assert caught.value.field == "auth_strategy"
    assert "token, keystone" in str(caught.value)


def test_an_unreachable_daemon_is_a_backend_error() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    with client, pytest.raises(BackendError) as caught:
        client.heartbeat(str(uuid.uuid4()))
    assert caught.value.backend == "servicegroup daemon"


def test_a_503_names_the_backend(
    sqlite_url: str, make_group: Callable[..., ServiceGroup], tmp_path
) -> None:
    group = make_group(sqlite_url)
    with serve_in_thread(create_app(group)) as base, Client(base) as client:
        sid = client.register("h", "b").uuid
        group.engine.dispose()
        (tmp_path / "servicegroup.sqlite").unlink()
        (tmp_path / "servicegroup.sqlite").mkdir()  # the database file is gone: SQL fails
        with pytest.raises(BackendError) as caught:
            client.get(sid)
    assert caught.value.backend == "database"


def test_close_stops_the_reporters_join_started(url: str) -> None:
    with Client(url, AGENT) as client:
        service = client.register("h-join", "b")
        reporter = client.join(service, report_interval=0.05)
        wait_for(lambda: reporter.beats >= 2, "two beats")
        second = client.join(service, 0.05)  # a second join replaces the first
        assert not reporter.alive and second.alive
    assert not second.alive


@pytest.mark.parametrize("interval", [0, -1.0, "10", True])
def test_join_refuses_an_interval_that_is_not_a_positive_number(
    admin: Client, interval: object
) -> None:
    with pytest.raises(InvalidInput) as caught:
        admin.join(admin.register("h", "b"), interval)  # type: ignore[arg-type]
    assert caught.value.field == "report_interval"


def test_a_long_poll_outlasts_the_client_timeout(url: str) -> None:
    """The read timeout grows by `wait`: a quiet stream is not a dead daemon."""
    with Client(url, ADMIN, timeout=0.3) as client:
        cursor = client.events().cursor
        quiet = client.events(since=cursor, wait=0.6)
    assert (quiet.events, quiet.cursor) == ([], cursor)


def test_heartbeat_many_raises_what_refuses_the_whole_call(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with Client(url, ADMIN) as admin:
        fleet = [admin.register(f"h{i}", "b") for i in range(3)]
    with Client(url) as anonymous, pytest.raises(Unauthorized):
        anonymous.heartbeat_many(fleet)


def test_the_reads_take_the_same_parameters_as_in_process() -> None:
    """down_time= and the filters: a caller moves between ServiceGroup and Client unchanged."""
    for name in ("get", "is_up", "get_all", "times_of"):
        ours = inspect.signature(getattr(Client, name)).parameters
        theirs = inspect.signature(getattr(ServiceGroup, name)).parameters
        assert list(ours) == list(theirs), name
        assert name == "times_of" or "down_time" in ours


def test_times_of_tells_a_binarys_own_times_and_the_defaults(
    sqlite_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    group = make_group(
        sqlite_url,
        report_interval=10.0,
        service_down_time=60.0,
        binaries__report_interval={"fast": "2"},
        binaries__service_down_time={"fast": "6.5"},
    )
    with serve_in_thread(create_app(group)) as base, Client(base) as client:
        for front in (group, client):
            assert front.times_of("fast") == Times("fast", 2.0, 6.5)
            assert front.times_of("other") == Times("other", 10.0, 60.0)
            with pytest.raises(InvalidInput) as caught:
                front.times_of("bad\nname")
            assert caught.value.field == "binary"


def test_an_older_daemon_without_times_makes_the_agent_fall_back() -> None:
    """A daemon older than the endpoint answers its unknown path 404: the agent's None."""

    def older_daemon(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/binaries/fast/times"
        return httpx.Response(404, json={"error": {"code": 404, "message": "Not Found"}})

    with Client("http://old", transport=httpx.MockTransport(older_daemon)) as client:
        with pytest.raises(NotFound) as caught:
            client.times_of("fast")
        assert caught.value.kind == "path"
        assert HttpTransport(client).times("fast") is None


def test_join_beats_at_the_default_interval_on_an_older_daemon() -> None:
    """No times endpoint (404): join() falls back to [DEFAULT] report_interval's default."""
    beats: list[str] = []

    def older_daemon(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/heartbeat"):
            beats.append(request.url.path)
            return httpx.Response(204)
        assert request.url.path == "/v1/binaries/b/times"
        return httpx.Response(404, json={"error": {"code": 404, "message": "Not Found"}})

    service = Service(
        str(uuid.uuid4()), "h", "b", None, None, 0, 0, False, None, False, None,
        datetime.now(UTC), None, False, None,
    )  # fmt: skip
    with Client("http://old", transport=httpx.MockTransport(older_daemon)) as client:
        reporter = client.join(service)
        assert reporter.interval == REPORT_INTERVAL
        wait_for(lambda: beats, "the reporter's first beat")
