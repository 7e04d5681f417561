"""server/service_paging.py: a total order, so pages neither repeat nor skip a service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from servicegroup import validation
from servicegroup.server.service_paging import page
from servicegroup.service import ServiceStatus, State
from tests.helpers import make_service

AT = datetime(2026, 1, 1, tzinfo=UTC)


def fleet() -> list[ServiceStatus]:
    return [
        ServiceStatus(make_service(host="c", availability_zone="az2", version=3), State.UP, AT),
        ServiceStatus(make_service(host="a", availability_zone=None, version=1), State.DOWN, None),
        ServiceStatus(
            make_service(host="b", availability_zone="az1", version=3),
            State.UNKNOWN,
            AT - timedelta(seconds=5),
        ),
        ServiceStatus(
            make_service(host="b", binary="nova-api", availability_zone="az1", version=2),
            State.DOWN,
            AT,
        ),
    ]


def names(statuses: list[ServiceStatus]) -> list[tuple[str, str]]:
    return [(s.service.host, s.service.binary) for s in statuses]


def test_no_sort_keeps_the_given_order_and_slices() -> None:
    statuses = fleet()
    assert page(statuses, None, None, 0, None) == statuses
    assert page(statuses, None, None, 1, 2) == statuses[1:3]
    assert page(statuses, None, "desc", 0, 1) == statuses[-1:]
    assert page(statuses, None, None, 10, 5) == []


def test_state_ascending_puts_the_down_ones_first_then_host_and_binary() -> None:
    assert names(page(fleet(), "state", "asc", 0, None)) == [
        ("a", "nova-compute"),
        ("b", "nova-api"),
        ("b", "nova-compute"),
        ("c", "nova-compute"),
    ]


def test_a_missing_value_sorts_as_the_smallest() -> None:
    by_zone = page(fleet(), "availability_zone", "asc", 0, None)
    assert by_zone[0].service.availability_zone is None
    by_beat = page(fleet(), "last_heartbeat", "desc", 0, None)
    assert by_beat[-1].last_heartbeat is None


@pytest.mark.parametrize("key", validation.SERVICE_SORT_KEYS)
@pytest.mark.parametrize("order", validation.SORT_ORDERS)
def test_pages_cover_every_service_once_for_every_key(key: str, order: str) -> None:
    statuses = fleet()
    pages = [page(statuses, key, order, offset, 1) for offset in range(len(statuses))]
    seen = [p[0].service.uuid for p in pages]
    assert sorted(seen) == sorted(s.service.uuid for s in statuses)
    assert [p[0] for p in pages] == page(statuses, key, order, 0, None)
