"""server/status_json.py: a list body byte for byte orjson's, reusing unchanged services' JSON."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import orjson

from servicegroup.server.status_json import StatusJson
from servicegroup.service import ServiceStatus, State
from tests.helpers import make_service

AT = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def statuses() -> list[ServiceStatus]:
    odd = make_service(host='odd "host" \\ é\n', topic=None, created_at=AT, updated_at=AT)
    plain = make_service(host="h", availability_zone="az1", created_at=AT)
    return [ServiceStatus(odd, State.DOWN, None), ServiceStatus(plain, State.UP, AT)]


def expected(items: list[ServiceStatus], total: int | None = None) -> bytes:
    total = len(items) if total is None else total
    return orjson.dumps({"services": [s.as_dict() for s in items], "total": total})


def test_the_body_is_orjsons_byte_for_byte() -> None:
    items = statuses()
    bodies = StatusJson()
    assert bodies.list_body(items, 2) == expected(items)
    assert bodies.list_body(items, 2) == expected(items)  # from the kept JSON, left as it was
    assert bodies.list_body(items[:1], 1) == expected(items[:1])
    assert bodies.list_body(items[1:], 7) == expected(items[1:], 7)  # one page of seven
    assert bodies.list_body([], 0) == expected([]) == b'{"services":[],"total":0}'


def test_a_status_that_is_the_same_object_is_not_serialised_again() -> None:
    items = statuses()
    bodies = StatusJson()
    bodies.list_body(items, 2)
    cached = bodies.table.entries[items[0].service.uuid][1]
    assert bodies.list_body(items, 2)  # unchanged: the same bytes object is reused
    assert bodies.table.entries[items[0].service.uuid][1] is cached
    changed = [replace(items[0], state=State.UP, last_heartbeat=AT), items[1]]
    assert bodies.list_body(changed, 2) == expected(changed)  # a new status object: serialised anew
    assert bodies.table.entries[items[0].service.uuid][1] is not cached


def test_times_orjson_would_write_otherwise_are_written_as_rfc3339_does() -> None:
    # orjson writes these times itself in the list body; where its text would
    # differ from rfc3339()'s (a zero fraction, another offset), it must not.
    whole = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    east = datetime(2026, 1, 1, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    items = [
        ServiceStatus(make_service(host="a", created_at=whole, updated_at=east), State.UP, AT),
        ServiceStatus(make_service(host="b", created_at=AT, updated_at=None), State.UP, whole),
    ]
    body = StatusJson().list_body(items, 2)
    assert body == expected(items)
    assert b'"created_at":"2026-01-01T12:00:00.000000Z"' in body
