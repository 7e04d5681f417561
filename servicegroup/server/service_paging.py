"""One sorted page of a service list: GET /v1/services?sort=&order=&offset=&limit=.

Why the daemon pages rather than the browser: the status page must paint a
fleet of 10,000 (or 100,000) services in under a second, and a browser that
receives every record first spends that second parsing JSON. Sorting stays
here too, so page two follows page one whatever the filters.

The order is total: ties on the sort key fall back to (host, binary),
which is unique among live services, so no service shows on two pages or
on none while nothing changes. A missing value (no availability zone, no
heartbeat yet) sorts before any value, as the smallest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from servicegroup.service import ServiceStatus

# "down" < "unknown" < "up": ascending by state puts the dead first.
_KEYS: dict[str, Callable[[ServiceStatus], Any]] = {
    "host": lambda s: s.service.host,
    "binary": lambda s: s.service.binary,
    "availability_zone": lambda s: s.service.availability_zone,
    "state": lambda s: s.state.value,
    "version": lambda s: s.service.version,
    "last_heartbeat": lambda s: s.last_heartbeat,
}


def _missing_first(value: Any) -> tuple[bool, Any]:
    """None sorts first, and is never compared with a str or datetime."""
    if value is None:
        return (False, "")
    return (True, value)


def page(
    statuses: Sequence[ServiceStatus],
    sort: str | None,
    order: str | None,
    offset: int,
    limit: int | None,
) -> list[ServiceStatus]:
    """statuses sorted by `sort` (None: as given), then [offset:offset+limit].

    Inputs are already validated (validation.sort_key, sort_order, offset, limit).
    """
    ordered: Sequence[ServiceStatus] = statuses
    if sort is not None:
        key = _KEYS[sort]
        ordered = sorted(
            statuses,
            key=lambda s: (_missing_first(key(s)), s.service.host, s.service.binary),
            reverse=order == "desc",
        )
    elif order == "desc":
        ordered = list(reversed(statuses))
    end = None if limit is None else offset + limit
    return list(ordered[offset:end])
