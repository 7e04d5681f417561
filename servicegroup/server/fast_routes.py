"""The two routes every service calls, answered in front of FastAPI.

Every service beats every report_interval, and a fleet's cold start
registers every service at once. Through FastAPI a request crosses a dozen
ASGI layers, the dependency solver and pydantic, ~0.35-0.5 ms of CPU: more
than the group-committed write it asks for. Measured at 10,000 services,
wrk -c50, memcached: 0.74 cores at 1,050 beats/s through FastAPI, 0.40
here; saturation 1,290-1,400 -> 4,060 beats/s; zookeeper 750-1,150 ->
1,940 beats/s; issue 17 (SQLite, alternated) 2,076-2,531 against
995-1,047 beats/s through FastAPI (x2.3), 181-300 against 426-459 us of
daemon CPU a beat.

FastAPI's routes are still there, for the OpenAPI document and for every
request these do not take, and these answer exactly as they do (a test
compares the two answer for answer):

    POST /v1/services/{id}/heartbeat
        the body limit, then the agent token (Guard.authorize reads it
        as the routes' dependency does: auth.bearer, or auth.x_auth_token
        under keystone), then the id rule and the beat.
    POST /v1/services
        only a plain request: a JSON object, sent as application/json,
        whose keys and value types are RegisterBody's. Then the agent token,
        then Registration's field rules, then the registration. Anything
        else (bad JSON, a wrong type, an unknown key, another content type)
        goes to FastAPI, body and all, which answers it as always; so this
        never has to repeat pydantic's error messages.

Errors go through errors.error_response, as FastAPI's handlers send them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from servicegroup.server import auth, errors
from servicegroup.service import Registration, ServiceStatus

# Starlette's {id}: one non-empty path segment, matched on the decoded path.
HEARTBEAT_PATH = re.compile(r"/v1/services/([^/]+)/heartbeat")
REGISTER_PATH = "/v1/services"

Beat = Callable[[str], Awaitable[None]]
Register = Callable[[Registration], Awaitable[tuple[ServiceStatus, bool]]]

_NAMES = ("host", "binary")
_OPTIONAL_NAMES = ("topic", "availability_zone")
_FIELDS = frozenset((*_NAMES, *_OPTIONAL_NAMES, "version"))


class FastRoutes:
    """An ASGI app: the heartbeat and registration routes, and `app` for everything else."""

    def __init__(self, app: FastAPI, beat: Beat, register: Register, guard: auth.Guard) -> None:
        self.app = app
        self.beat = beat
        self.register = register
        self.guard = guard  # its tokens, read once per request: a reload may swap them

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == REGISTER_PATH:
            await self._register(scope, receive, send)
            return
        match = HEARTBEAT_PATH.fullmatch(path)
        if match is None:
            await self.app(scope, receive, send)
            return
        try:
            await self._read_body(scope, receive)
            await self.guard.authorize(auth.Level.AGENT, scope["headers"])
            await self.beat(match.group(1))
        except Exception as exc:
            await errors.error_response(exc)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def _register(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self._read_body(scope, receive)
        except HTTPException as exc:
            await errors.error_response(exc)(scope, receive, send)
            return
        fields = _plain_registration(scope, body)
        if fields is None:
            await self.app(scope, errors.replay(body, receive), send)
            return
        try:
            await self.guard.authorize(auth.Level.AGENT, scope["headers"])
            status, created = await self.register(Registration(**fields))
        except Exception as exc:
            await errors.error_response(exc)(scope, receive, send)
            return
        response = JSONResponse(status.as_dict(), status_code=201 if created else 200)
        await response(scope, receive, send)

    @staticmethod
    async def _read_body(scope: Scope, receive: Receive) -> bytes:
        body = await errors.read_body(scope, receive)
        if body is None:
            raise HTTPException(413, f"request body exceeds {errors.MAX_BODY_BYTES} bytes")
        return body


def _plain_registration(scope: Scope, body: bytes) -> dict[str, Any] | None:
    """RegisterBody's fields when FastAPI would take the body as they are; else None."""
    # FastAPI's strict content type: JSON is parsed only when the request says it is JSON.
    types = [value for name, value in scope["headers"] if name == b"content-type"]
    if not types or any(t.split(b";")[0].strip().lower() != b"application/json" for t in types):
        return None
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(fields, dict) or not fields.keys() <= _FIELDS:
        return None
    if not all(type(fields.get(name)) is str for name in _NAMES):
        return None
    if not all(type(fields.get(name)) in (str, type(None)) for name in _OPTIONAL_NAMES):
        return None
    if type(fields.get("version", 0)) is not int:
        return None
    return fields
