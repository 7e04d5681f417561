"""servicegroup.client against the real app on a real socket: results and error mapping.

The client must raise what the Python API raises for the same mistake, so
each error case is checked against the exception class and its fields.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from servicegroup import ServiceGroup
from servicegroup.client import TOKEN_ENV, Client
from servicegroup.exceptions import BackendError, Forbidden, InvalidInput, NotFound, Unauthorized
from servicegroup.server.app import create_app
from tests.functional.daemon import free_port
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
    created = admin.register("h1", "nova-compute", topic="compute", version=4)
    sid = created["id"]
    assert created["state"] == "down" and created["topic"] == "compute"
    assert admin.register("h1", "nova-compute", version=5)["id"] == sid
    admin.heartbeat(sid)
    assert admin.get(sid)["state"] == "up"
    assert [s["id"] for s in admin.list(binary="nova-compute", state="up")] == [sid]
    assert admin.list(binary="nova-compute", host="other") == []
    assert admin.update(sid, disabled=True, disabled_reason="kernel")["disabled"] is True
    assert admin.versions("nova-compute") == {"binary": "nova-compute", "min": 5, "max": 5}
    admin.leave(sid)
    assert admin.get(sid)["state"] == "down"
    assert admin.versions("nova-compute", up_only=True)["max"] is None
    assert admin.health()["driver"] == "db"
    admin.delete(sid)
    with pytest.raises(NotFound) as caught:
        admin.get(sid)
    assert caught.value.key == sid


def test_invalid_input_carries_the_field_and_the_rule(admin: Client) -> None:
    with pytest.raises(InvalidInput) as caught:
        admin.register("bad\nhost", "b")
    assert caught.value.field == "host"
    assert caught.value.rule == "must contain only printable characters"
    sid = admin.register("h", "b")["id"]
    with pytest.raises(InvalidInput) as caught:
        admin.update(sid, version=-1)
    assert caught.value.field == "version"
    with pytest.raises(InvalidInput) as caught:  # 422: wrong JSON type
        admin.update(sid, disabled="yes")
    assert caught.value.field == "disabled"
    with pytest.raises(InvalidInput) as caught:
        admin.list(state="sideways")
    assert caught.value.field == "state"


def test_not_found_for_unknown_and_malformed_ids(admin: Client) -> None:
    for sid in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(NotFound):
            admin.heartbeat(sid)
        with pytest.raises(NotFound):
            admin.leave(sid)


def test_401_and_403_become_unauthorized_and_forbidden(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with Client(url) as anonymous, pytest.raises(Unauthorized):
        anonymous.register("h", "b")
    with Client(url, "wrong") as wrong, pytest.raises(Unauthorized):
        wrong.register("h", "b")
    with Client(url, AGENT) as agent:
        sid = agent.register("h", "b")["id"]
        with pytest.raises(Forbidden) as caught:
            agent.delete(sid)
    assert AGENT not in str(caught.value)


def test_the_token_comes_from_the_environment(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, AGENT)
    with Client(url) as client:
        assert client.register("h-env", "b")["host"] == "h-env"
    with Client(url, ADMIN) as client:  # the argument wins over the environment
        client.delete(client.register("h-env", "b")["id"])


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
        sid = client.register("h", "b")["id"]
        group.engine.dispose()
        (tmp_path / "servicegroup.sqlite").unlink()
        (tmp_path / "servicegroup.sqlite").mkdir()  # the database file is gone: SQL fails
        with pytest.raises(BackendError) as caught:
            client.get(sid)
    assert caught.value.backend == "database"
