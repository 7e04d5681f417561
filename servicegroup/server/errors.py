"""Every error the HTTP API sends: one mapping, one body shape.

Exceptions from the ServiceGroup API, FastAPI's request validation, routing
(404/405) and anything unexpected all pass through `to_error()`, so a client
always gets `{"error": {"code", "message", "field"}}` and a 5xx only ever
means a backend or a bug, never bad input.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPMethod
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicegroup.exceptions import (
    BackendError,
    ClaimHeld,
    ClaimLost,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
)
from servicegroup.server.schemas import ErrorBody

LOG = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024

_DESCRIPTIONS = {
    400: "Invalid input: a field broke a rule, or the body is not JSON.",
    401: "No bearer token, or not a valid one (only when the daemon has tokens).",
    403: "The token's kind does not allow this (e.g. an agent token on PATCH).",
    404: "No such service (a malformed id is also not found), or no such path.",
    405: "Method not allowed on this path.",
    409: "A concurrent change conflicted with this one; retry. On /v1/claims, `kind` says "
    "claim_held (someone else holds it) or claim_lost (the token is stale).",
    413: f"Request body larger than {MAX_BODY_BYTES} bytes.",
    422: "The body or a query parameter has the wrong shape or JSON type.",
    500: "Unexpected server error (logged by the server).",
    503: "A backend (the database or the liveness driver's store) did not answer.",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes, all with the error body schema."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def json_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """responses() for a route whose success is not JSON (FastAPI would reuse its type)."""
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        code: {"description": _DESCRIPTIONS[code], "content": {"application/json": {"schema": ref}}}
        for code in codes
    }


def to_error(exc: BaseException) -> tuple[int, str, str | None]:
    """The one mapping from an exception to (status, message, field)."""
    if isinstance(exc, InvalidInput):
        return 400, str(exc), exc.field
    if isinstance(exc, NotFound):
        return 404, str(exc), None
    if isinstance(exc, Unauthorized):
        return 401, str(exc), None
    if isinstance(exc, Forbidden):
        return 403, str(exc), None
    if isinstance(exc, BackendError):
        LOG.warning("backend unavailable: %s", exc)
        return 503, f"{exc.backend} backend unavailable", None
    if isinstance(exc, ClaimHeld | ClaimLost):
        return 409, str(exc), None
    if isinstance(exc, IntegrityError):
        return 409, "conflicting concurrent change; retry", None
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), None
    LOG.error("unexpected error", exc_info=exc)
    return 500, "internal server error", None


def _validation_error(exc: RequestValidationError) -> tuple[int, str, str | None]:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return 400, f"request body is not valid JSON: {detail}".rstrip(": "), None
    # loc is ("body" | "query" | "path", name, ...); the name is the field.
    names = [str(part) for part in first.get("loc", ())[1:] if isinstance(part, str)]
    field = names[0] if names else None
    message = first.get("msg", "invalid request")
    if first.get("type") == "missing" and field is None:
        message = "a JSON object body is required"
    return 422, f"{field}: {message}" if field else message, field


def error_detail(exc: BaseException) -> dict[str, Any]:
    """The body's "error" object; also each failed beat's in POST /v1/heartbeats."""
    status, message, field = to_error(exc)
    detail: dict[str, Any] = {"code": status, "message": message, "field": field}
    if isinstance(exc, ClaimHeld | ClaimLost):
        claim = exc.holder if isinstance(exc, ClaimHeld) else exc.current
        detail["kind"] = exc.kind
        detail["claim"] = None if claim is None else claim.as_dict()  # type: ignore[attr-defined]
    if isinstance(exc, NotFound):
        # What is missing, for servicegroup.client to raise the same NotFound.
        detail["not_found"] = {"kind": exc.kind, "key": exc.key}
    return detail


def error_response(exc: BaseException) -> JSONResponse:
    detail = error_detail(exc)
    headers = getattr(exc, "headers", None) if isinstance(exc, HTTPException) else None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": exc.challenge}
    return JSONResponse({"error": detail}, status_code=detail["code"], headers=headers)


async def _handler(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """A 405 whose Allow lists every method the path serves (RFC 9110 15.5.6).

    Routing answers 405 from the first route whose path matched, and FastAPI
    makes one route per method: its Allow named that one route's methods
    (OPTIONS /v1/claims said POST, though GET is served too).
    """
    allow = ", ".join(allowed_methods(request.app.router.routes, request.scope))
    return error_response(HTTPException(405, headers={"Allow": allow}))


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Every HTTP method some route serves at `scope`'s path, asked of the routes themselves.

    Each route is asked as the router asks it, once per method, so what this
    lists is what the app answers (included routers, HEAD on a plain GET
    route) and no table has to be kept in step with the routes.
    """
    probe = {
        "type": "http",
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "headers": [],
    }

    def serves(method: str) -> bool:
        return any(route.matches({**probe, "method": method})[0] is Match.FULL for route in routes)

    return [method.value for method in HTTPMethod if serves(method.value)]


class GuardMiddleware:
    """Cap request bodies, and turn anything unexpected into a logged 500.

    Starlette's own catch-all re-raises for the server to log, which would log
    every bug twice; catching here logs it once. The body is read up front (at
    most MAX_BODY_BYTES) so an oversized body is refused before any handler
    runs, whether or not the client sent Content-Length.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            body = await read_body(scope, receive)
            if body is None:
                too_big = HTTPException(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
                await error_response(too_big)(scope, receive, send)
                return
            await self.app(scope, replay(body, receive), tracking_send)
        except Exception as exc:
            if started:
                raise
            await error_response(exc)(scope, receive, send)


async def read_body(scope: Scope, receive: Receive) -> bytes | None:
    """The whole request body, or None when it is over the limit."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
            return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body already read put back in front, for the app that reads it next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def install(app: FastAPI) -> None:
    for exc_class in (
        InvalidInput,
        NotFound,
        Unauthorized,
        Forbidden,
        BackendError,
        ClaimHeld,
        ClaimLost,
        IntegrityError,
        RequestValidationError,
        HTTPException,
    ):
        app.add_exception_handler(exc_class, _handler)
    app.add_exception_handler(405, _method_not_allowed)  # before the HTTPException handler
    app.add_middleware(GuardMiddleware)
