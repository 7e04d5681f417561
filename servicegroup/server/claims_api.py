"""/v1/claims: the HTTP face of ServiceGroup's claim methods (api.py), included by app.py.

Same rules as the rest of the API: shapes in schemas.py, field rules in
validation.py (through the ServiceGroup API), every error through errors.py.
Claim writes need an agent token, force-release an admin token.

A resource id may contain any printable character, '/' included, so it is
the last path segment of GET /v1/claims/{type}/{id} (a `path` parameter) and
travels in the body for renew, release and force-release.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from servicegroup import validation
from servicegroup.api import ServiceGroup
from servicegroup.claims import token
from servicegroup.exceptions import InvalidInput, NotFound
from servicegroup.server import auth, errors
from servicegroup.server.schemas import (
    KIND_DOC,
    NAME_DOC,
    ClaimBody,
    ClaimList,
    ClaimOut,
    ForceReleaseBody,
    RenewBody,
    TokenBody,
)

_READ = (400, 401, 403, 422, 500, 503)
_WRITE = (*_READ, 404, 409, 413)


def make_router(sg: ServiceGroup, guard: auth.Guard) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post(
        "/claims",
        dependencies=[guard.agent],
        status_code=201,
        response_model=ClaimOut,
        responses=errors.responses(*_WRITE),
    )
    def claim(body: ClaimBody) -> JSONResponse:
        """Claim a resource; 409 kind claim_held names the live holder."""
        made = sg.claim(
            body.service_id,
            body.resource_type,
            body.resource_id,
            body.operation,
            body.details,
            incarnation=body.incarnation,
        )
        return JSONResponse(made.as_dict(), status_code=201)

    @router.post(
        "/claims/renew",
        dependencies=[guard.agent],
        response_model=ClaimOut,
        responses=errors.responses(*_WRITE),
    )
    def renew(body: RenewBody) -> JSONResponse:
        """Say the work goes on; 409 kind claim_lost when the token is stale (stop working)."""
        extra: dict[str, Any] = (
            {"details": body.details} if "details" in body.model_fields_set else {}
        )
        renewed = sg.renew(_token(body), incarnation=body.incarnation, **extra)
        return JSONResponse(renewed.as_dict())

    @router.post(
        "/claims/release",
        dependencies=[guard.agent],
        response_model=ClaimOut,
        responses=errors.responses(*_WRITE),
    )
    def release(body: TokenBody) -> JSONResponse:
        """The work is done: free the resource; 409 kind claim_lost when the token is stale."""
        return JSONResponse(sg.release(_token(body), incarnation=body.incarnation).as_dict())

    @router.post(
        "/claims/force-release",
        dependencies=[guard.admin],
        response_model=ClaimOut,
        responses=errors.responses(*_WRITE),
    )
    def force_release(body: ForceReleaseBody) -> JSONResponse:
        """Operator override: free a live claim whoever holds it; bumps the epoch; audited."""
        freed = sg.force_release(body.resource_type, body.resource_id, body.reason)
        return JSONResponse(freed.as_dict())

    @router.get(
        "/claims",
        dependencies=[guard.read],
        response_model=ClaimList,
        responses=errors.responses(*_READ),
    )
    def list_claims(
        owner: Annotated[str | None, Query(json_schema_extra={"format": "uuid"})] = None,
        resource_type: Annotated[str | None, Query(json_schema_extra=KIND_DOC)] = None,
        state: Annotated[
            str | None, Query(json_schema_extra={"enum": list(validation.CLAIM_STATES)})
        ] = None,
    ) -> JSONResponse:
        """Claims (deleted tombstones only when asked for by state), by resource."""
        found = sg.list_claims(owner=owner, resource_type=resource_type, state=state)
        return JSONResponse({"claims": [c.as_dict() for c in found]})

    @router.get(
        "/claims/{resource_type}/{resource_id:path}",
        dependencies=[guard.read],
        response_model=ClaimOut,
        responses=errors.responses(*_READ, 404),
    )
    def get_claim(
        resource_type: Annotated[str, Path(json_schema_extra=KIND_DOC)],
        resource_id: Annotated[str, Path(json_schema_extra=NAME_DOC)],
    ) -> JSONResponse:
        try:
            validation.kind("resource_type", resource_type)
            validation.resource_id(resource_id)
        except InvalidInput:
            raise NotFound("claim", f"{resource_type}/{resource_id}") from None
        return JSONResponse(sg.get_claim(resource_type, resource_id).as_dict())

    @router.get(
        "/services/{id}/lost-claims",
        dependencies=[guard.read],
        response_model=ClaimList,
        responses=errors.responses(*_READ, 404),
    )
    def lost_claims(
        id: Annotated[str, Path(json_schema_extra={"format": "uuid"})],
        incarnation: Annotated[str, Query(json_schema_extra={"format": "uuid"})],
    ) -> JSONResponse:
        """Claims this service held in an incarnation other than `incarnation` (yours, now)."""
        try:
            uuid = validation.service_id(id)
        except InvalidInput:
            raise NotFound("service", id) from None
        lost = sg.lost_claims(uuid, incarnation=incarnation)
        return JSONResponse({"claims": [c.as_dict() for c in lost]})

    return router


def _token(body: TokenBody) -> Any:
    return token(
        body.resource_type, body.resource_id, body.service_id, body.incarnation, body.epoch
    )
