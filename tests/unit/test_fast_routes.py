"""The daemon's fast routes answer exactly as the FastAPI routes they stand in for.

server/fast_routes.py takes POST /v1/services/{id}/heartbeat and plain
POST /v1/services before FastAPI's stack; the FastAPI routes are still
there. Every request below goes to both, each over a real socket, and the
answers must be the same: status, body, and the headers a client acts on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from servicegroup import ServiceGroup
from servicegroup.exceptions import BackendError
from servicegroup.server.app import create_app
from servicegroup.server.errors import MAX_BODY_BYTES
from servicegroup.server.fast_routes import FastRoutes
from tests.live import serve_in_thread

AGENT, ADMIN, READ = "agent-tok-1c2d", "admin-tok-9e8f", "read-tok-4a5b"
HEADERS = ("content-type", "www-authenticate", "content-length", "allow")


@pytest.fixture(params=["open", "tokens"])
def both(request, sqlite_url: str, make_group: Callable[..., ServiceGroup]) -> Iterator[tuple]:
    """(fast client, FastAPI client, a registered service id) for one group."""
    options = {}
    if request.param == "tokens":
        options = {"api__agent_tokens": [AGENT], "api__admin_tokens": [ADMIN]}
        options["api__read_tokens"] = [READ]
    group = make_group(sqlite_url, service_down_time=60, report_interval=1, **options)
    app = create_app(group)
    assert isinstance(app, FastRoutes)
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


# Registrations that fail (or go to FastAPI): the same answer from both, byte for byte.
def registrations_refused() -> list[tuple[dict, dict]]:
    """(headers, httpx request kwargs) pairs that must not register anything."""
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[dict, dict]] = []
    for token in (None, READ, "wrong"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # A bad name too, so that without tokens it is still refused (400, not 401).
        cases.append((headers, {"json": {"host": "", "binary": "b"}}))
    agent = {"Authorization": f"Bearer {AGENT}"}
    bodies: list[object] = [
        {"host": "", "binary": "b"},
        {"host": "h\n", "binary": "b"},
        {"host": " h", "binary": "b"},
        {"host": "h", "binary": "b", "version": -1},
        {"host": "h", "binary": "b", "version": 2**70},
        {"host": "h", "binary": "b", "version": True},
        {"host": "h", "binary": "b", "version": "1"},
        {"host": "h", "binary": "b", "topic": 5},
        {"host": "h", "binary": "b", "extra": 1},
        {"host": "h"},
        {"host": 1, "binary": "b"},
        {"host": "h" * 256, "binary": "b"},
        ["h", "b"],
        "h",
        None,
    ]
    cases += [(agent, {"json": body}) for body in bodies]
    raw: list[tuple[dict, bytes]] = [
        (json_type, b""),
        (json_type, b"{"),
        (json_type, b'{"host": "h", "binary": NaN}'),
        ({"Content-Type": "text/plain"}, b'{"host": "", "binary": "b"}'),
        ({}, b'{"host": "", "binary": "b"}'),
        (json_type, b"x" * (MAX_BODY_BYTES + 1)),
    ]
    cases += [({**agent, **headers}, {"content": content}) for headers, content in raw]
    return cases


def test_refused_registrations_answer_as_the_fastapi_route(both) -> None:
    fast, slow, _sid, group = both
    before = len(group.get_all())
    for headers, kwargs in registrations_refused():
        got = answer(fast.post("/v1/services", headers=headers, **kwargs))
        want = answer(slow.post("/v1/services", headers=headers, **kwargs))
        assert got == want, (headers, kwargs)
        assert got[0] >= 400, (headers, kwargs)
    assert len(group.get_all()) == before


def test_registrations_answer_as_the_fastapi_route(both) -> None:
    fast, slow, _sid, group = both
    agent = {"Authorization": f"Bearer {AGENT}"}
    variable = ("id", "host", "created_at", "updated_at")
    for body in (
        {"binary": "b"},
        {"binary": "b", "topic": "t", "availability_zone": None, "version": 3},
        {"binary": "b", "version": 4.0},  # an integral float: FastAPI's (JsonInt)
    ):
        answers = []
        for client, host in ((fast, "fast-host"), (slow, "slow-host")):
            first = client.post("/v1/services", headers=agent, json={"host": host, **body})
            again = client.post("/v1/services", headers=agent, json={"host": host, **body})
            answers.append((first, again, host))
        for first, again, host in answers:
            assert (first.status_code, again.status_code) == (201, 200)
            assert first.json()["id"] == again.json()["id"]
            assert first.json()["host"] == host
        (f1, f2, _), (s1, s2, _) = answers
        for mine, theirs in ((f1, s1), (f2, s2)):
            assert answer(mine)[2].keys() == answer(theirs)[2].keys()
            assert mine.headers["content-type"] == theirs.headers["content-type"]
            strip = {k: v for k, v in mine.json().items() if k not in variable}
            assert strip == {k: v for k, v in theirs.json().items() if k not in variable}
        group.delete(f1.json()["id"])
        group.delete(s1.json()["id"])


def test_plain_requests_never_reach_fastapi(
    sqlite_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    group = make_group(sqlite_url, service_down_time=60, report_interval=1)
    routes = create_app(group)
    inner, reached = routes.app, []

    async def spy(scope, receive, send) -> None:
        reached.append((scope["method"], scope["path"]))
        await inner(scope, receive, send)

    routes.app = spy  # type: ignore[assignment]
    with serve_in_thread(routes) as url, httpx.Client(base_url=url, timeout=10) as client:
        created = client.post("/v1/services", json={"host": "h", "binary": "b"})
        assert created.status_code == 201
        sid = created.json()["id"]
        assert client.post(f"/v1/services/{sid}/heartbeat").status_code == 204
        assert (
            client.post("/v1/services", json={"host": "h", "binary": "b", "x": 1}).status_code
            == 422
        )
    assert reached == [("POST", "/v1/services")]  # only the body FastAPI must judge
