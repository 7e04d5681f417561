"""A small Python client for the servicegroup HTTP API.

It raises the same exceptions as the ServiceGroup Python API, rebuilt from
the daemon's error body, so code written against one works against the
other: InvalidInput (400/413/422), NotFound (404), Unauthorized (401),
Forbidden (403), BackendError (5xx, or the daemon cannot be reached).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

import httpx

from servicegroup.exceptions import (
    BackendError,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceGroupError,
    Unauthorized,
)

TOKEN_ENV = "SERVICEGROUP_TOKEN"
DEFAULT_TIMEOUT = 10.0
DAEMON = "servicegroup daemon"


class Client:
    """One keep-alive connection pool to one daemon; safe to share between threads.

    The bearer token comes from `token`, else from $SERVICEGROUP_TOKEN (so it
    need not be on a command line); with neither, no Authorization is sent.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        token = token or os.environ.get(TOKEN_ENV) or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- endpoints ---------------------------------------------------------------

    def register(
        self,
        host: str,
        binary: str,
        topic: str | None = None,
        availability_zone: str | None = None,
        version: int = 0,
    ) -> dict[str, Any]:
        body = {
            "host": host,
            "binary": binary,
            "topic": topic,
            "availability_zone": availability_zone,
            "version": version,
        }
        return self._json("POST", "/v1/services", json=body)

    def heartbeat(self, id: str) -> None:
        self._call("POST", f"/v1/services/{_quote(id)}/heartbeat", id=id)

    def leave(self, id: str) -> None:
        self._call("POST", f"/v1/services/{_quote(id)}/leave", id=id)

    def get(self, id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/services/{_quote(id)}", id=id)

    def list(self, **filters: str | None) -> list[dict[str, Any]]:
        """binary, host, topic, availability_zone, state; None means no filter."""
        params = {key: value for key, value in filters.items() if value is not None}
        body = self._json("GET", "/v1/services", params=params)
        services: list[dict[str, Any]] = body["services"]
        return services

    def update(self, id: str, **changes: Any) -> dict[str, Any]:
        """disabled, disabled_reason, forced_down, version (admin token)."""
        return self._json("PATCH", f"/v1/services/{_quote(id)}", id=id, json=changes)

    def delete(self, id: str) -> None:
        self._call("DELETE", f"/v1/services/{_quote(id)}", id=id)

    def versions(self, binary: str, up_only: bool = False) -> dict[str, Any]:
        params = {"up_only": "true" if up_only else "false"}
        return self._json("GET", f"/v1/versions/{_quote(binary)}", params=params)

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    # -- internals ---------------------------------------------------------------

    def _json(
        self, method: str, path: str, *, id: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The answer's JSON body: a dict for every endpoint this client calls."""
        body: dict[str, Any] = self._call(method, path, id=id, **kwargs).json()
        return body

    def _call(
        self, method: str, path: str, *, id: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise BackendError(DAEMON, f"{self.base_url}: {detail}") from exc
        if response.is_success:
            return response
        raise error_from_response(response, id)


def error_from_response(response: httpx.Response, id: str | None = None) -> ServiceGroupError:
    """The exception the daemon's {"error": {...}} body stands for."""
    status = response.status_code
    try:
        error = response.json()["error"]
        message, field = str(error["message"]), error.get("field")
    except (ValueError, KeyError, TypeError):
        message, field = response.text.strip() or response.reason_phrase, None
    if status in (400, 413, 422):
        # A bad body as a whole (not JSON, too big) has no field; say "request".
        name = field or "request"
        return InvalidInput(name, message.removeprefix(f"{name}: "))
    if status == 401:
        return Unauthorized(message)
    if status == 403:
        return Forbidden(message)
    if status == 404:
        return NotFound("service", id) if id is not None else NotFound("path", str(response.url))
    if status >= 500:
        backend = message.removesuffix(" backend unavailable") if status == 503 else DAEMON
        return BackendError(backend, f"HTTP {status}: {message}")
    return ServiceGroupError(f"HTTP {status}: {message}")


def _quote(segment: str) -> str:
    # '.' too: httpx removes "." and ".." path segments (RFC 3986 dot-segment
    # removal), so a binary named ".." would ask for /v1/ instead.
    return urllib.parse.quote(segment, safe="").replace(".", "%2E")
