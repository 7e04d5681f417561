"""What the last reads built, by service uuid, handed out again while its source is unchanged.

Speed trick: between two reads of a fleet most services are unchanged, and
comparing a service's source (its row, its stored value, its znode's mtime)
with the one its object was built from costs a fraction of building the
object again. Measured at 10,000 unchanged services (callgrind, issue 17):
records.Reuse makes get_all x1.47 faster on SQLite and x2.13 on PostgreSQL
(some 25 ms), the status cache another x1.08 and x1.17-1.27 (4-6 ms); when
every row changed they cost 7-10%. records.Reuse (Services),
ServiceGroup's statuses and the drivers' Pulses all keep such a table; this
is the one helper they share, so they share one bound and one pruning rule:

- one bound: a table past MAX_ENTRIES is emptied at the start of a read, so
  endless churn cannot grow it for ever (it refills from the next read);
- one pruning rule: a read of every live service (a whole sweep pass, an
  unfiltered get_all) calls ServiceGroup._keep_only(live), which calls
  keep_only(live) on every table, so a deleted service leaves every cache.

Thread-safe without a lock: values are immutable and replaced whole, and the
dict is only changed by single operations; a racing read builds again, which
is all a cache can lose.

Usage::

    cache: IdentityCache[Pulse] = IdentityCache()
    entries = cache.for_read()       # the dict itself, for a tight loop
    pulse = entries.get(uuid)
    if pulse is None or pulse.last_heartbeat is not seen:
        pulse = entries[uuid] = new_pulse(seen)
    ...
    cache.keep_only(live_uuids)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Generic, TypeVar

V = TypeVar("V")

MAX_ENTRIES = 1_000_000


class IdentityCache(Generic[V]):
    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[str, V] = {}

    def for_read(self) -> dict[str, V]:
        """The table, emptied first if it is past the bound: call once per read."""
        if len(self.entries) > MAX_ENTRIES:
            self.entries.clear()
        return self.entries

    def keep_only(self, live: Collection[str]) -> None:
        """Forget every uuid not in `live`, what a read of every live service returned.

        A table no larger than `live` has nothing to drop, since a read adds
        every uuid it returns: the usual case, one len(). Another read may
        add entries meanwhile, hence the copy of the keys.
        """
        entries = self.entries
        if len(entries) <= len(live):
            return
        for uuid in list(entries):
            if uuid not in live:
                entries.pop(uuid, None)

    def discard(self, uuid: str) -> None:
        self.entries.pop(uuid, None)

    def __len__(self) -> int:
        return len(self.entries)
