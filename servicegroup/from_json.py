"""The daemon's JSON back into the values the Python API hands out.

servicegroup.client returns what ServiceGroup returns (Service,
ServiceStatus, Claim, Event...), so code moves between the two by changing
one constructor. Each shape is the inverse of one as_dict() (service.py,
db/claim_rows.py, db/event_log.py, binary_times.py), and this is the one place that reads it.

What the JSON does not carry stays at its "not known here" value: a
Service's last_seen_up (the db driver's column; its state and last
heartbeat are in the ServiceStatus), deleted (a deleted service is never
sent) and observed_state (the sweeper's bookkeeping).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from servicegroup.binary_times import Times
from servicegroup.db.claim_rows import Claim
from servicegroup.db.event_log import Event, EventBatch
from servicegroup.service import Service, ServiceStatus, State


def when(value: str | None) -> datetime | None:
    """An RFC 3339 time as the API writes it ("...Z"), aware, in UTC."""
    return None if value is None else datetime.fromisoformat(value)


def service_from_json(data: dict[str, Any]) -> Service:
    created_at = when(data["created_at"])
    assert created_at is not None  # every record has one: ServiceOut says so
    return Service(
        uuid=data["id"],
        host=data["host"],
        binary=data["binary"],
        topic=data["topic"],
        availability_zone=data["availability_zone"],
        version=data["version"],
        report_count=data["report_count"],
        disabled=data["disabled"],
        disabled_reason=data["disabled_reason"],
        forced_down=data["forced_down"],
        last_seen_up=None,
        created_at=created_at,
        updated_at=when(data["updated_at"]),
        deleted=False,
        deleted_at=None,
    )


def status_from_json(data: dict[str, Any]) -> ServiceStatus:
    return ServiceStatus(
        service_from_json(data), State(data["state"]), when(data["last_heartbeat"])
    )


def claim_from_json(data: dict[str, Any]) -> Claim:
    claimed_at, updated_at = when(data["claimed_at"]), when(data["updated_at"])
    assert claimed_at is not None and updated_at is not None  # ClaimOut: never null
    return Claim(
        resource_type=data["resource_type"],
        resource_id=data["resource_id"],
        operation=data["operation"],
        owner=data["owner"],
        incarnation=data["incarnation"],
        epoch=data["epoch"],
        state=data["state"],
        claimed_at=claimed_at,
        updated_at=updated_at,
        details=data["details"],
        reason=data["reason"],
        attempts=data["attempts"],
        retry_at=when(data["retry_at"]),
        owner_host=data["owner_host"],
        owner_binary=data["owner_binary"],
    )


def event_from_json(data: dict[str, Any]) -> Event:
    time = when(data["time"])
    assert time is not None  # EventOut: never null
    return Event(
        id=data["id"],
        service_id=data["service_id"],
        host=data["host"],
        binary=data["binary"],
        previous=data["previous"],
        state=data["state"],
        cause=data["cause"],
        time=time,
        details=data["details"],
    )


def event_batch_from_json(data: dict[str, Any]) -> EventBatch:
    return EventBatch([event_from_json(row) for row in data["events"]], data["cursor"])


def times_from_json(data: dict[str, Any]) -> Times:
    return Times(
        binary=data["binary"],
        report_interval=float(data["report_interval"]),
        service_down_time=float(data["service_down_time"]),
    )
