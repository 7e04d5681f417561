"""The status page at `/`: an HTML page and its assets, served from the package.

What it shows and how it stays safe is in doc/status-page.md. The server's
part is small on purpose: the page is plain files (static/), and everything
it shows comes from the JSON API (GET /v1/summary, /v1/services with
sort/offset/limit, /v1/events, /v1/claims) with the token the user typed
in, sent in the Authorization header by the page's own script, or in
X-Auth-Token under `[api] auth_strategy = keystone`.

That strategy is the one thing the page learns from the daemon's
configuration, and it comes in the HTML itself, as a meta tag the script
reads: not an inline script (the CSP forbids one), and not an API call,
which would need a token before the page knew how to send one.

So these routes need no token: they hold no data, and a browser cannot
send a bearer header on a navigation anyway. They are left out of the
OpenAPI document (include_in_schema=False): it describes the JSON API a
client or fuzzer talks to, and a page is not part of it. They are still
ordinary routes, so a method they do not serve is a 405 whose Allow says
GET (errors.py).

Each answer carries a Content-Security-Policy with no 'unsafe-inline' and
nothing from another origin: even a string that slipped into the page as
markup could not run a script, load an image elsewhere or send data away.
The files are read once, when the app is built: every request is a
memory copy, and a broken install fails at start, not on the first visit.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # A page built for whoever typed a token in: no shared cache may keep it.
    "Cache-Control": "no-store",
}
# path served -> (file in static/, media type)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/static/page.css": ("page.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

# index.html says auth_strategy = token; the served page says the daemon's.
STRATEGY_META = '<meta name="servicegroup-auth-strategy" content="{}">'


def read_asset(name: str) -> bytes:
    return resources.files("servicegroup.server").joinpath("static", name).read_bytes()


def with_auth_strategy(page: bytes, auth_strategy: str) -> bytes:
    """index.html telling its script the daemon's [api] auth_strategy."""
    shipped = STRATEGY_META.format("token").encode()
    if page.count(shipped) != 1:
        # A broken install fails at start, not on the first visit.
        raise RuntimeError("static/index.html lacks its auth-strategy meta tag")
    return page.replace(shipped, STRATEGY_META.format(html.escape(auth_strategy)).encode())


def make_router(auth_strategy: str = "token") -> APIRouter:
    router = APIRouter()
    for path, (name, media_type) in ASSETS.items():
        body = read_asset(name)
        if name == "index.html":
            body = with_auth_strategy(body, auth_strategy)
        router.add_api_route(
            path,
            _asset_endpoint(body, media_type),
            methods=["GET"],
            include_in_schema=False,
            response_class=Response,
        )
    return router


def _asset_endpoint(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def asset() -> Response:
        return Response(body, media_type=media_type, headers=HEADERS)

    return asset
