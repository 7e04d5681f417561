"""Request and response shapes for the HTTP API, and nothing more.

Pydantic checks only shape and JSON types here (strict, so "5" is not an
int and 1 is not a bool); every field rule (lengths, printable, sign) lives
in servicegroup.validation, so HTTP, CLI and Python callers get the same
messages. The limits below are copied into the OpenAPI document from the same
constants, for clients and fuzzers to read, and are never enforced here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
)

from servicegroup import validation


def _doc(**schema: Any) -> Any:
    """Document a constraint in OpenAPI without pydantic enforcing it."""

    def extra(field_schema: dict[str, Any]) -> None:
        # Absent means "leave alone" (or null): a null default would only
        # suggest that null is a value to send.
        if field_schema.get("default", 0) is None:
            del field_schema["default"]
        field_schema.update(schema)

    return extra


def _integral(value: Any) -> Any:
    """5.0 is a JSON Schema integer (2020-12: a number with no fractional part).

    Strict pydantic refuses every float, so a client serialising integers as
    floats, as some JSON libraries do, would get a 422 for a value the
    OpenAPI document calls valid. Strings and bools stay refused.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]

NAME_DOC = {
    "minLength": 1,
    "maxLength": validation.MAX_NAME_LENGTH,
    "pattern": validation.name_pattern(),
}
VERSION_DOC = {"minimum": 0, "maximum": validation.MAX_VERSION}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterBody(_Body):
    host: StrictStr = Field(json_schema_extra=_doc(**NAME_DOC))
    binary: StrictStr = Field(json_schema_extra=_doc(**NAME_DOC))
    topic: StrictStr | None = Field(default=None, json_schema_extra=_doc(**NAME_DOC))
    availability_zone: StrictStr | None = Field(default=None, json_schema_extra=_doc(**NAME_DOC))
    version: JsonInt = Field(default=0, json_schema_extra=_doc(**VERSION_DOC))


class UpdateBody(_Body):
    """Admin changes; only the fields present in the body are written."""

    disabled: StrictBool = Field(default=None, json_schema_extra=_doc())  # type: ignore[assignment]
    disabled_reason: StrictStr | None = Field(
        default=None, json_schema_extra=_doc(maxLength=validation.MAX_REASON_LENGTH)
    )
    forced_down: StrictBool = Field(default=None, json_schema_extra=_doc())  # type: ignore[assignment]
    version: JsonInt = Field(default=None, json_schema_extra=_doc(**VERSION_DOC))  # type: ignore[assignment]


class ServiceOut(BaseModel):
    """Documents ServiceStatus.as_dict(), which is what the endpoints send."""

    id: str = Field(json_schema_extra={"format": "uuid"})
    host: str
    binary: str
    topic: str | None
    availability_zone: str | None
    version: int
    disabled: bool
    disabled_reason: str | None
    forced_down: bool
    state: str = Field(json_schema_extra={"enum": list(validation.STATES)})
    last_heartbeat: datetime | None
    report_count: int
    created_at: datetime
    updated_at: datetime | None


class SummaryCounts(BaseModel):
    total: int
    up: int
    down: int
    unknown: int
    disabled: int
    forced_down: int


class SummaryGroup(SummaryCounts):
    binary: str
    availability_zone: str | None
    min_version: int | None
    max_version: int | None


class Summary(BaseModel):
    """The fleet at a glance (server/fleet_summary.py)."""

    now: datetime = Field(description="The daemon's clock, for heartbeat ages.")
    event_cursor: int = Field(description="The newest event's id: `since` for GET /v1/events.")
    totals: SummaryCounts
    groups: list[SummaryGroup]


class ServiceList(BaseModel):
    services: list[ServiceOut]
    total: int = Field(
        json_schema_extra={"minimum": 0},
        description="How many services match the filters, before offset and limit.",
    )
    summary: Summary | None = Field(
        default=None,
        description="With ?summary=true: GET /v1/summary's answer, from the same read "
        "when no filter is given.",
    )


class VersionRange(BaseModel):
    binary: str
    min: int | None
    max: int | None


class BinaryTimesOut(BaseModel):
    """Documents binary_times.Times.as_dict(): how a service of this binary must beat."""

    binary: str
    report_interval: float = Field(
        json_schema_extra={"exclusiveMinimum": 0},
        description="Seconds between heartbeats: [binaries] report_interval's entry for "
        "this binary, else [DEFAULT] report_interval.",
    )
    service_down_time: float = Field(
        json_schema_extra={"exclusiveMinimum": 0},
        description="Seconds without a heartbeat before a service of this binary is down: "
        "[binaries] service_down_time's entry, else [DEFAULT] service_down_time. Always "
        "more than 2 x report_interval.",
    )


class EventOut(BaseModel):
    """Documents Event.as_dict(): one state change of a service."""

    id: int = Field(description="Increasing; pass the last one seen as `since`.")
    service_id: str = Field(json_schema_extra={"format": "uuid"})
    host: str
    binary: str
    previous: str | None = Field(
        description="State before (up, down, unknown); null when first registered.",
        json_schema_extra={"enum": [*validation.STATES, None]},
    )
    state: str = Field(
        description="State after; equal to previous for disabled/enabled/forced_down_unset.",
        json_schema_extra={"enum": list(validation.STATES)},
    )
    cause: str = Field(
        description="registered, deleted, disabled, enabled, forced_down, forced_down_unset, "
        "heartbeat, heartbeat_timeout, leave, backend_unavailable; for claims "
        "claim_revoked, claim_recovered, claim_recovery_failed, claim_force_released."
    )
    time: datetime = Field(description="When it was recorded, on the SQL server's clock.")
    details: dict[str, Any] | None = Field(
        default=None,
        description="Claim events (cause claim_*): resource_type, resource_id, epoch, "
        "reason, outcome... Null for service events.",
    )


class EventList(BaseModel):
    events: list[EventOut]
    cursor: int = Field(description="Send as `since` next: last id returned, or the since given.")


class Health(BaseModel):
    """sg.health(): driver and backend names plus whatever the driver describes."""

    model_config = ConfigDict(extra="allow")

    driver: str
    backend: str


class ErrorDetail(BaseModel):
    code: int = Field(description="The HTTP status code, repeated for log readers.")
    message: str
    field: str | None = Field(description="The offending input field, when there is one.")
    kind: str | None = Field(
        default=None,
        description="On 409 from /v1/claims: claim_held (someone else holds it) or "
        "claim_lost (your token is stale: stop working under it).",
        json_schema_extra={"enum": ["claim_held", "claim_lost"]},
    )
    claim: dict[str, Any] | None = Field(
        default=None,
        description="With kind: the claim as it now stands (the holder, for claim_held).",
    )
    not_found: dict[str, str] | None = Field(
        default=None,
        description='On 404 for a record: {"kind": "service" or "claim", "key": its id}.',
    )


class BeatsBody(_Body):
    """POST /v1/heartbeats: the services to beat for, in one request."""

    ids: list[StrictStr] = Field(
        description="Service ids: as many as fit in the 64 KiB body limit, some 1,600.",
        json_schema_extra=_doc(items={"type": "string", "format": "uuid"}),
    )


class BeatsOut(BaseModel):
    failed: dict[str, ErrorDetail] = Field(
        description="The beats that failed alone, by service id, each with the error its own "
        "POST /v1/services/{id}/heartbeat would have had (404, or 503 for a backend server "
        "down while others answered). Every other beat was recorded."
    )


# -- claims ------------------------------------------------------------------------

KIND_DOC = {
    "minLength": 1,
    "maxLength": validation.MAX_KIND_LENGTH,
    "pattern": "^[A-Za-z0-9_.-]+$",
}
UUID_DOC: dict[str, JsonValue] = {"format": "uuid"}


class ClaimBody(_Body):
    """Claim a resource for a service, under the calling process's incarnation."""

    service_id: StrictStr = Field(json_schema_extra=_doc(**UUID_DOC))
    incarnation: StrictStr = Field(
        description="A uuid the calling process makes once when it starts: a restarted "
        "process is never taken for its former self.",
        json_schema_extra=_doc(**UUID_DOC),
    )
    resource_type: StrictStr = Field(json_schema_extra=_doc(**KIND_DOC))
    resource_id: StrictStr = Field(json_schema_extra=_doc(**NAME_DOC))
    operation: StrictStr = Field(json_schema_extra=_doc(**KIND_DOC))
    details: dict[str, Any] | None = Field(
        default=None,
        description=f"Any JSON object, at most {validation.MAX_DETAILS_BYTES} bytes encoded.",
    )


class TokenBody(_Body):
    """A claim token, as returned by POST /v1/claims: renew and release check all of it."""

    service_id: StrictStr = Field(json_schema_extra=_doc(**UUID_DOC))
    incarnation: StrictStr = Field(json_schema_extra=_doc(**UUID_DOC))
    resource_type: StrictStr = Field(json_schema_extra=_doc(**KIND_DOC))
    resource_id: StrictStr = Field(json_schema_extra=_doc(**NAME_DOC))
    epoch: JsonInt = Field(json_schema_extra=_doc(minimum=1, maximum=validation.MAX_EPOCH))


class RenewBody(TokenBody):
    details: dict[str, Any] | None = Field(
        default=None, description="Replaces the claim's details when present."
    )


class ForceReleaseBody(_Body):
    resource_type: StrictStr = Field(json_schema_extra=_doc(**KIND_DOC))
    resource_id: StrictStr = Field(json_schema_extra=_doc(**NAME_DOC))
    reason: StrictStr = Field(json_schema_extra=_doc(maxLength=validation.MAX_REASON_LENGTH))


class ClaimOut(BaseModel):
    """Documents Claim.as_dict()."""

    resource_type: str
    resource_id: str
    operation: str
    owner: str = Field(description="Service uuid of the (last) owner.", json_schema_extra=UUID_DOC)
    owner_host: str | None
    owner_binary: str | None
    incarnation: str
    epoch: int = Field(description="The fencing token: rises on every acquire and takeover.")
    state: str = Field(json_schema_extra={"enum": list(validation.CLAIM_STATES)})
    claimed_at: datetime
    updated_at: datetime
    details: dict[str, Any] | None
    reason: str | None = Field(description="Why it left its owner, once it has.")
    attempts: int = Field(description="Recovery hook runs so far.")
    retry_at: datetime | None = Field(description="When recovery acts next, while recovering.")


class ClaimList(BaseModel):
    claims: list[ClaimOut]


class ErrorBody(BaseModel):
    error: ErrorDetail
