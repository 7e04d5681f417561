"""The daemon's uuid -> Service heartbeat cache: bounded, and never older than its TTL."""

from __future__ import annotations

import time
from dataclasses import replace

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


def test_bounded_evicting_the_oldest() -> None:
    cache = ServiceCache(ttl=60, maxsize=2)
    for uuid in ("a", "b"):
        cache.put(svc(uuid))
    cache.put(svc("a"))  # refreshed: now the newest
    cache.put(svc("c"))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
