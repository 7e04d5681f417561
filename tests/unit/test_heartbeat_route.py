"""The daemon's fast heartbeat route answers exactly as the FastAPI route it stands in for.

server/app.py HeartbeatRoute takes POST /v1/services/{id}/heartbeat before
FastAPI's stack; the FastAPI route is still there. Every request below goes
to both, each over a real socket, and the answers must be the same: status,
body, and the headers a client acts on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from servicegroup import ServiceGroup
from servicegroup.exceptions import BackendError
from servicegroup.server.app import HeartbeatRoute, create_app
from servicegroup.server.errors import MAX_BODY_BYTES
from tests.live import serve_in_thread

AGENT, ADMIN, READ = "agent-tok-1c2d", "admin-tok-9e8f", "read-tok-4a5b"
HEADERS = ("content-type", "www-authenticate", "content-length")


@pytest.fixture(params=["open", "tokens"])
def both(request, sqlite_url: str, make_group: Callable[..., ServiceGroup]) -> Iterator[tuple]:
    """(fast client, FastAPI client, a registered service id) for one group."""
    options = {}
    if request.param == "tokens":
        options = {"api__agent_tokens": [AGENT], "api__admin_tokens": [ADMIN]}
        options["api__read_tokens"] = [READ]
    group = make_group(sqlite_url, service_down_time=60, report_interval=1, **options)
    app = create_app(group)
    assert isinstance(app, HeartbeatRoute)
    sid = group.register("compute-1", "nova-compute").uuid
    with (
        serve_in_thread(app) as fast_url,
        serve_in_thread(app.app) as slow_url,
        httpx.Client(base_url=fast_url, timeout=10) as fast,
        httpx.Client(base_url=slow_url, timeout=10) as slow,
    ):
        yield fast, slow, sid, group


def answer(response: httpx.Response) -> tuple:
    return (
        response.status_code,
        response.content,
        {name: response.headers.get(name) for name in HEADERS},
    )


def requests_for(sid: str) -> list[tuple[str, str, dict]]:
    gone = str(uuid.uuid4())
    cases = []
    for token in (None, AGENT, ADMIN, READ, "wrong"):
        for scheme in ("Bearer", "bearer", "Basic"):
            headers = {"Authorization": f"{scheme} {token}"} if token else {}
            for path in (sid, gone, "not-a-uuid", "%20", sid.upper()):
                cases.append(("POST", f"/v1/services/{path}/heartbeat", {"headers": headers}))
    auth = {"Authorization": f"Bearer {AGENT}"}
    cases += [
        ("POST", f"/v1/services/{sid}/heartbeat", {"headers": {"Authorization": "Bearer"}}),
        ("POST", f"/v1/services/{sid}/heartbeat", {"headers": {"Authorization": "Bearer  x"}}),
        ("POST", f"/v1/services/{sid}/heartbeat?x=1", {"headers": auth}),
        ("POST", f"/v1/services/{sid}/heartbeat", {"headers": auth, "content": b"{}"}),
        ("POST", f"/v1/services/{sid}/heartbeat", {"headers": auth, "content": b"x" * 10}),
        (
            "POST",
            f"/v1/services/{sid}/heartbeat",
            {"headers": auth, "content": b"x" * (MAX_BODY_BYTES + 1)},
        ),
        ("POST", f"/v1/services/{sid}/heartbeat/", {"headers": auth}),
        ("POST", f"/v1/services/{sid}//heartbeat", {"headers": auth}),
        ("POST", "/v1/services//heartbeat", {"headers": auth}),
        ("GET", f"/v1/services/{sid}/heartbeat", {"headers": auth}),
        ("PUT", f"/v1/services/{sid}/heartbeat", {"headers": auth}),
    ]
    return cases


def test_fast_route_answers_as_the_fastapi_route(both) -> None:
    fast, slow, sid, _group = both
    for method, path, kwargs in requests_for(sid):
        got = answer(fast.request(method, path, **kwargs))
        want = answer(slow.request(method, path, **kwargs))
        assert got == want, (method, path, kwargs.get("headers"))


def test_fast_route_beats(both) -> None:
    fast, _slow, sid, group = both
    headers = {"Authorization": f"Bearer {AGENT}"}
    before = group.get(sid).service.report_count
    assert fast.post(f"/v1/services/{sid}/heartbeat", headers=headers).status_code == 204
    assert group.get(sid).service.report_count == before + 1
    assert group.is_up(sid)


def test_a_backend_outage_is_503_on_both(both) -> None:
    fast, slow, sid, group = both
    headers = {"Authorization": f"Bearer {AGENT}"}
    for client in (fast, slow):  # fill each app's record cache
        assert client.post(f"/v1/services/{sid}/heartbeat", headers=headers).status_code == 204
    original = group.driver.beat_many

    def failing(services):
        raise BackendError("database", "gone")

    group.driver.beat_many = failing  # the daemon's beats go out in batches
    try:
        got = answer(fast.post(f"/v1/services/{sid}/heartbeat", headers=headers))
        want = answer(slow.post(f"/v1/services/{sid}/heartbeat", headers=headers))
    finally:
        group.driver.beat_many = original
    assert got == want and got[0] == 503
