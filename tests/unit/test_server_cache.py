"""The daemon's uuid -> Service heartbeat cache: bounded, pruned, never older than its TTL."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest

from servicegroup import ServiceGroup, identity_cache
from servicegroup.db import records
from servicegroup.server.app import ServiceCache, create_app
from servicegroup.service import Service
from tests.helpers import make_service
from tests.live import serve_in_thread

TEMPLATE = make_service(uuid="u0", host="h", binary="b")


def svc(uuid: str) -> Service:
    return replace(TEMPLATE, uuid=uuid, host=uuid)


def test_put_get_drop() -> None:
    cache = ServiceCache(ttl=60)
    cache.put(svc("a"))
    assert cache.get("a") == svc("a")
    cache.drop("a")
    cache.drop("a")  # dropping twice is harmless
    assert cache.get("a") is None


def test_entries_expire_so_other_processes_deletes_are_noticed() -> None:
    cache = ServiceCache(ttl=0.01)
    cache.put(svc("a"))
    deadline = time.monotonic() + 5
    while cache.get("a") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.get("a") is None


def test_bounded_and_pruned_like_every_identity_cache(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    monkeypatch.setattr(identity_cache, "MAX_ENTRIES", 2)
    cache = ServiceCache(ttl=60)
    for uuid in ("a", "b", "c"):
        cache.put(svc(uuid))
    cache.put(svc("d"))  # past the bound: emptied first
    assert [cache.get(u) for u in "abc"] == [None, None, None] and cache.get("d") == svc("d")
    monkeypatch.undo()

    group = make_group(sqlite_url)
    kept, gone = group.register("h1", "b"), group.register("h2", "b")
    pruned = ServiceCache(ttl=60)
    group.keep_pruned(pruned.table)
    pruned.put(kept)
    pruned.put(gone)
    group.delete(gone)  # by this group: forgotten at once
    assert pruned.get(gone.uuid) is None and pruned.get(kept.uuid) == kept
    pruned.put(gone)  # as if another process had deleted it since
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

    def counted(engine, uuids):
        reads.append(sorted(uuids))
        return get_many(engine, uuids)

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
