"""server/fleet_summary.py: counts and versions by binary and zone, the page's first table."""

from __future__ import annotations

from servicegroup.server.fleet_summary import summarize
from servicegroup.service import ServiceStatus, State
from tests.helpers import make_service


def test_groups_by_binary_and_zone_with_counts_and_version_range() -> None:
    statuses = [
        ServiceStatus(make_service(availability_zone="az1", version=3), State.UP, None),
        ServiceStatus(
            make_service(availability_zone="az1", version=1, disabled=True), State.UP, None
        ),
        ServiceStatus(
            make_service(availability_zone="az1", version=7, forced_down=True), State.DOWN, None
        ),
        ServiceStatus(make_service(availability_zone=None, version=2), State.UNKNOWN, None),
        ServiceStatus(make_service(binary="nova-api", availability_zone="az1"), State.UP, None),
    ]
    groups, totals = summarize(statuses)
    assert [g.as_dict() for g in groups] == [
        {
            "binary": "nova-api",
            "availability_zone": "az1",
            "total": 1,
            "up": 1,
            "down": 0,
            "unknown": 0,
            "disabled": 0,
            "forced_down": 0,
            "min_version": 0,
            "max_version": 0,
        },
        {
            "binary": "nova-compute",
            "availability_zone": None,
            "total": 1,
            "up": 0,
            "down": 0,
            "unknown": 1,
            "disabled": 0,
            "forced_down": 0,
            "min_version": 2,
            "max_version": 2,
        },
        {
            "binary": "nova-compute",
            "availability_zone": "az1",
            "total": 3,
            "up": 2,
            "down": 1,
            "unknown": 0,
            "disabled": 1,
            "forced_down": 1,
            "min_version": 1,
            "max_version": 7,
        },
    ]
    assert totals == {
        "total": 5,
        "up": 3,
        "down": 1,
        "unknown": 1,
        "disabled": 1,
        "forced_down": 1,
    }


def test_an_empty_fleet_has_no_group_and_zero_totals() -> None:
    groups, totals = summarize([])
    assert groups == []
    assert set(totals.values()) == {0}
