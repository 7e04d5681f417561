"""The daemon's uuid -> Service heartbeat cache: bounded, pruned, never older than its TTL."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from servicegroup import ServiceGroup, identity_cache
from servicegroup.server.app import ServiceCache
from servicegroup.service import Service
from tests.helpers import make_service

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
