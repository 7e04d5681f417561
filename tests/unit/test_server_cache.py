"""The daemon's heartbeat cache: which services exist, bounded, pruned, never older than its TTL."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from servicegroup import ServiceGroup, identity_cache
from servicegroup.db import records
from servicegroup.server.app import ServiceCache, create_app
from servicegroup.service import Registration
from tests.live import serve_in_thread


@pytest.fixture
def group(sqlite_url: str, make_group: Callable[..., ServiceGroup]) -> ServiceGroup:
    return make_group(sqlite_url)


def test_an_entry_is_the_service_the_groups_reads_keep(
    group: ServiceGroup, sqlite_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    """No second copy of a record: the cache hands out the object the group's reads built."""
    a = make_group(sqlite_url).register("h1", "b")  # by another process: not read here yet
    cache = ServiceCache(group, ttl=60)
    assert cache.get(a.uuid) is None  # never put
    cache.put(a.uuid)
    assert cache.get(a.uuid) is None  # put, but no read has found it yet: a miss, read anew
    (ref,) = cache.refs([a.uuid])
    assert ref == a and ref is group.known(a.uuid)
    assert cache.get(a.uuid) is ref
    (listed,) = group.get_all()
    assert listed.service is ref  # the same object every read hands out while unchanged
    cache.drop(a.uuid)
    cache.drop(a.uuid)  # dropping twice is harmless
    assert cache.get(a.uuid) is None
    assert cache.refs([a.uuid, "0b6e7f7a-1f5e-4a4b-9d55-3c1c4f1a2b3c"])[1] == (
        "0b6e7f7a-1f5e-4a4b-9d55-3c1c4f1a2b3c"  # no record: left a string, for a 404
    )


def test_a_registration_here_is_kept_with_no_read(group: ServiceGroup) -> None:
    """The daemon registers, then the service's first beat finds its record in memory."""
    ((status, created),) = group.register_statuses([Registration("h1", "b")])
    assert created
    cache = ServiceCache(group, ttl=60)
    cache.put(status.service.uuid)
    assert cache.get(status.service.uuid) is status.service


def test_entries_expire_so_other_processes_deletes_are_noticed(group: ServiceGroup) -> None:
    a = group.register("h1", "b")
    cache = ServiceCache(group, ttl=0.01)
    cache.refs([a.uuid])
    deadline = time.monotonic() + 5
    while cache.get(a.uuid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.get(a.uuid) is None


def test_bounded_and_pruned_like_every_identity_cache(
    monkeypatch: pytest.MonkeyPatch, group: ServiceGroup
) -> None:
    fleet = [group.register(f"h{i}", "b") for i in range(4)]
    group.get_all()  # the group's reads know them all
    monkeypatch.setattr(identity_cache, "MAX_ENTRIES", 2)
    cache = ServiceCache(group, ttl=60)
    for service in fleet[:3]:
        cache.put(service.uuid)
    cache.put(fleet[3].uuid)  # past the bound: emptied first
    assert [cache.get(s.uuid) for s in fleet[:3]] == [None, None, None]
    assert cache.get(fleet[3].uuid) == fleet[3]
    monkeypatch.undo()

    kept, gone = fleet[0], fleet[1]
    pruned = ServiceCache(group, ttl=60)
    group.keep_pruned(pruned.table)
    pruned.refs([kept.uuid, gone.uuid])
    group.delete(gone)  # by this group: forgotten at once
    assert pruned.get(gone.uuid) is None and pruned.get(kept.uuid) == kept
    pruned.put(gone.uuid)  # as if another process had deleted it since
    group.get_all()  # a read of every live service
    assert pruned.get(gone.uuid) is None and pruned.get(kept.uuid) == kept


def test_with_the_db_driver_entries_never_expire_yet_deletes_are_404(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    """Its UPDATE says when a record is gone, so a beat never re-reads a record it knows."""
    group = make_group(sqlite_url, service_down_time=0.05, report_interval=0.01)
    other = make_group(sqlite_url)
    kept, gone = group.register("h1", "b"), group.register("h2", "b")
    reads: list[list[str]] = []
    get_many = records.get_many

    def counted(engine, uuids, reuse=None):
        reads.append(sorted(uuids))
        return get_many(engine, uuids, reuse)

    monkeypatch.setattr(records, "get_many", counted)
    with serve_in_thread(create_app(group)) as url, httpx.Client(base_url=url) as client:
        for service in (kept, gone):
            assert client.post(f"/v1/services/{service.uuid}/heartbeat").status_code == 204
        assert reads  # registered by the Python API: read on their first beat
        reads.clear()
        time.sleep(0.1)  # past down_time, which would be the TTL with other drivers
        other.delete(gone)
        assert client.post(f"/v1/services/{kept.uuid}/heartbeat").status_code == 204
        assert client.post(f"/v1/services/{gone.uuid}/heartbeat").status_code == 404
    assert reads == [], reads
