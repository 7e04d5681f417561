"""The fleet at a glance: GET /v1/summary, what the status page's first table shows.

Counted in the daemon from one get_all(), so a browser learns how 10,000
services stand from a few hundred bytes instead of downloading them all.
Grouped by (binary, availability zone), the way an operator asks "is
nova-compute in az2 healthy?". The version range is over every service of
the group, up or not: a down service on an old version still blocks an
upgrade's last step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from servicegroup.service import ServiceStatus, rfc3339

COUNTS = ("total", "up", "down", "unknown", "disabled", "forced_down")


@dataclass
class Group:
    binary: str
    availability_zone: str | None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    min_version: int | None = None
    max_version: int | None = None

    def add(self, status: ServiceStatus) -> None:
        service = status.service
        self.counts["total"] += 1
        self.counts[status.state.value] += 1
        self.counts["disabled"] += service.disabled
        self.counts["forced_down"] += service.forced_down
        version = service.version
        if self.min_version is None or version < self.min_version:
            self.min_version = version
        if self.max_version is None or version > self.max_version:
            self.max_version = version

    def as_dict(self) -> dict[str, Any]:
        return {
            "binary": self.binary,
            "availability_zone": self.availability_zone,
            **self.counts,
            "min_version": self.min_version,
            "max_version": self.max_version,
        }


def summarize(statuses: Iterable[ServiceStatus]) -> tuple[list[Group], dict[str, int]]:
    """One Group per (binary, availability zone), sorted by both (no zone first); and the
    fleet's totals."""
    groups: dict[tuple[str, str | None], Group] = {}
    totals = dict.fromkeys(COUNTS, 0)
    for status in statuses:
        service = status.service
        key = (service.binary, service.availability_zone)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(*key)
        group.add(status)
    for group in groups.values():
        for name in COUNTS:
            totals[name] += group.counts[name]
    ordered = sorted(groups.values(), key=lambda g: (g.binary, g.availability_zone or ""))
    return ordered, totals


def summary_json(statuses: Iterable[ServiceStatus], now: datetime, cursor: int) -> dict[str, Any]:
    """GET /v1/summary's answer, also carried by GET /v1/services?summary=true.

    `cursor` must be read before the statuses were, so no event falls between the two.
    """
    groups, totals = summarize(statuses)
    return {
        "now": rfc3339(now),
        "event_cursor": cursor,
        "totals": totals,
        "groups": [group.as_dict() for group in groups],
    }
