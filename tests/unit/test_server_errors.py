"""The daemon's 405 answers (server/errors.py): Allow lists every method the path serves.

Ground truth is behaviour, not the code under test: each path of the
OpenAPI document (which FastAPI builds from the routes) is sent every HTTP
method over a real socket, through the whole daemon app (fast routes
included); the methods not answered 405 are the ones served, and every 405
on that path must list exactly those in Allow (RFC 9110 15.5.6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPMethod
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from servicegroup import ServiceGroup
from servicegroup.server.app import create_app
from servicegroup.server.errors import allowed_methods
from tests.live import serve_in_thread

# A value for each path parameter in the document; a new parameter without one fails
# test_every_path_lists_what_it_serves, so no path is left out.
SAMPLES = {
    "id": "11dc64d7-5c2a-4989-b4c6-2d8a4c55d6d5",
    "binary": "nova-compute",
    "resource_type": "volume",
    "resource_id": "vol-1",
}
# uvicorn refuses CONNECT before any app sees it; the daemon serves it nowhere.
SENT = [method for method in HTTPMethod if method is not HTTPMethod.CONNECT]


@pytest.fixture
def daemon(sqlite_url: str, make_group: Callable[..., ServiceGroup]) -> Iterator[tuple]:
    """(a client of the daemon's app over a real socket, its OpenAPI document)."""
    app = create_app(make_group(sqlite_url))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client, app.app.openapi()


def served(client: httpx.Client, path: str) -> tuple[set[str], list[httpx.Response]]:
    """The methods `path` does not refuse with 405, and its 405 answers."""
    answers = {method.value: client.request(method.value, path) for method in SENT}
    refused = [response for response in answers.values() if response.status_code == 405]
    return {m for m, response in answers.items() if response.status_code != 405}, refused


def allow(response: httpx.Response) -> set[str]:
    return {method.strip() for method in response.headers["allow"].split(",")}


def test_every_path_lists_what_it_serves(daemon: tuple[httpx.Client, dict[str, Any]]) -> None:
    client, document = daemon
    for template, operations in document["paths"].items():
        path = template.format(**SAMPLES)
        methods, refused = served(client, path)
        assert methods == {method.upper() for method in operations}, path  # as documented
        assert refused, path  # something is refused on every path: PUT, at least
        for response in refused:
            assert allow(response) == methods, (response.request.method, path)
            if response.request.method != "HEAD":  # a HEAD answer has no body
                assert response.json() == {
                    "error": {"code": 405, "message": "Method Not Allowed", "field": None}
                }


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/v1/services", {"GET", "POST"}),  # a collection; POST is also a fast route
        (f"/v1/services/{SAMPLES['id']}", {"GET", "PATCH", "DELETE"}),  # one item
        (f"/v1/services/{SAMPLES['id']}/heartbeat", {"POST"}),  # an action, a fast route
        (f"/v1/services/{SAMPLES['id']}/lost-claims", {"GET"}),  # a read below an item
        ("/v1/claims", {"GET", "POST"}),  # a collection in the included claims router
        ("/v1/claims/renew", {"POST"}),  # an action there
        ("/v1/claims/volume/a/b", {"GET"}),  # an item whose id holds '/'
        ("/v1/versions/nova%2Fcompute", {"GET"}),  # a name holding '/'
        ("/healthz", {"GET"}),  # outside /v1
        ("/openapi.json", {"GET", "HEAD"}),  # Starlette's own route serves HEAD
    ],
)
def test_a_405_lists_every_method_of_its_resource(
    daemon: tuple[httpx.Client, dict[str, Any]], path: str, methods: set[str]
) -> None:
    client, _document = daemon
    served_methods, refused = served(client, path)
    assert served_methods == methods
    for response in refused:
        assert allow(response) == methods, response.request.method


def test_no_such_path_is_404_without_allow(daemon: tuple[httpx.Client, dict[str, Any]]) -> None:
    client, _document = daemon
    for method in ("GET", "PUT", "OPTIONS"):
        response = client.request(method, "/v1/nothing")
        assert response.status_code == 404
        assert "allow" not in response.headers


def test_allowed_methods_asks_each_route_for_each_method() -> None:
    """HEAD comes with a plain Starlette GET route; a route elsewhere adds nothing."""

    def ok(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("")

    routes = [
        Route("/a", ok, methods=["GET"]),
        Route("/a", ok, methods=["DELETE"]),
        Route("/b", ok, methods=["POST"]),
    ]

    def scope(path: str) -> dict[str, Any]:
        return {"type": "http", "method": "PUT", "path": path, "root_path": ""}

    assert allowed_methods(routes, scope("/a")) == ["DELETE", "GET", "HEAD"]
    assert allowed_methods(routes, scope("/b")) == ["POST"]
    assert allowed_methods(routes, scope("/c")) == []
