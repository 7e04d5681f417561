"""identity_cache.py: one bound and one pruning rule for every table of reused values."""

from __future__ import annotations

import pytest

from servicegroup import identity_cache
from servicegroup.identity_cache import IdentityCache


def test_keep_only_drops_what_the_live_set_left_out() -> None:
    cache: IdentityCache[int] = IdentityCache()
    cache.for_read().update(u1=1, u2=2, u3=3)
    cache.keep_only({"u2", "u4"})
    assert cache.entries == {"u2": 2}


def test_keep_only_drops_nothing_from_a_table_no_larger_than_the_live_set() -> None:
    cache: IdentityCache[int] = IdentityCache()
    cache.for_read().update(u1=1, u2=2)
    cache.keep_only({"u1", "u2", "u3"})  # u3 is new: nothing to drop
    assert cache.entries == {"u1": 1, "u2": 2}
    cache.keep_only(["u2"])
    assert cache.entries == {"u2": 2}


def test_a_table_past_the_bound_starts_afresh_at_the_next_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(identity_cache, "MAX_ENTRIES", 2)
    cache: IdentityCache[int] = IdentityCache()
    entries = cache.for_read()
    entries.update(u1=1, u2=2)
    assert cache.for_read() == {"u1": 1, "u2": 2}  # at the bound: kept
    entries["u3"] = 3
    assert cache.for_read() == {} and len(cache) == 0  # past it: emptied, same table
    assert cache.for_read() is entries


def test_discard_forgets_one() -> None:
    cache: IdentityCache[int] = IdentityCache()
    cache.for_read().update(u1=1, u2=2)
    cache.discard("u1")
    cache.discard("absent")
    assert cache.entries == {"u2": 2}


def test_every_driver_cache_is_pruned_through_keep_only() -> None:
    from servicegroup.clock import SYSTEM_CLOCK
    from servicegroup.db.engine import make_engine
    from servicegroup.drivers.db import DbDriver

    driver = DbDriver(None, make_engine("sqlite://"), SYSTEM_CLOCK)  # read() needs no config
    extra = driver.identity_cache()
    extra.for_read().update(u1=1, u2=2)
    driver.keep_only({"u2"})
    assert extra.entries == {"u2": 2}
    assert driver.identity_caches[0] is driver._pulses and extra in driver.identity_caches
