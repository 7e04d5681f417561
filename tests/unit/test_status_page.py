"""server/status_page.py and its assets: served from the package, locked down by CSP.

The page's behaviour in a browser is tested in tests/functional/test_status_page.py;
these check what can be read from the files and the routes themselves.
"""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from servicegroup.server import errors, status_page


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    errors.install(app)
    app.include_router(status_page.make_router())
    return TestClient(app)


@pytest.mark.parametrize("path", list(status_page.ASSETS))
def test_every_asset_is_served_from_the_package_with_the_policy(
    client: TestClient, path: str
) -> None:
    answer = client.get(path)
    name, media_type = status_page.ASSETS[path]
    assert answer.status_code == 200
    assert answer.content == status_page.read_asset(name)
    assert answer.headers["content-type"] == media_type
    assert answer.headers["content-security-policy"] == status_page.CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"


def test_the_policy_allows_nothing_inline_and_nothing_from_elsewhere() -> None:
    policy = status_page.CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    sources = {part.split()[0]: part.split()[1:] for part in policy.split("; ")}
    assert sources["default-src"] == ["'none'"]
    assert all(values in (["'self'"], ["'none'"]) for values in sources.values())


def test_other_methods_are_405_naming_get(client: TestClient) -> None:
    answer = client.post("/")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET"
    assert answer.json()["error"]["code"] == 405


def test_only_the_listed_files_are_served(client: TestClient) -> None:
    assert client.get("/static/../status_page.py").status_code == 404
    assert client.get("/static/other.js").status_code == 404


def test_the_pages_are_not_in_the_api_document(client: TestClient) -> None:
    assert client.app.openapi()["paths"] == {}  # type: ignore[attr-defined]


def test_no_asset_loads_anything_from_another_origin() -> None:
    for name, _ in status_page.ASSETS.values():
        # The SVG namespace is a name, not a fetch.
        text = status_page.read_asset(name).decode().replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]", text), name


def test_the_html_has_no_inline_script_style_or_handler() -> None:
    html = status_page.read_asset("index.html").decode()
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/page.js" defer>']
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)


def test_the_script_never_parses_strings_as_html() -> None:
    lines = status_page.read_asset("page.js").decode().splitlines()
    script = "\n".join(line for line in lines if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "cookie" not in script.lower()


def test_the_page_says_the_daemons_auth_strategy() -> None:
    """The script learns it from a meta tag: the one difference between the two pages."""
    shipped = status_page.read_asset("index.html")
    pages = {}
    for strategy in ("token", "keystone"):
        app = FastAPI()
        app.include_router(status_page.make_router(strategy))
        pages[strategy] = TestClient(app).get("/").content
    assert pages["token"] == shipped
    tag = '<meta name="servicegroup-auth-strategy" content="keystone">'
    assert pages["keystone"] == shipped.replace(
        tag.replace("keystone", "token").encode(), tag.encode()
    )
    assert tag.encode() in pages["keystone"]


def test_a_page_without_its_meta_tag_fails_at_start() -> None:
    with pytest.raises(RuntimeError, match="auth-strategy meta tag"):
        status_page.with_auth_strategy(b"<html><head></head></html>", "keystone")
