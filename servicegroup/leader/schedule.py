"""Which services a sweep must read: the bookkeeping of the incremental sweep.

A full sweep reads every service; at 100,000 services that is over a second
of CPU, every sweep_interval, for a fleet where almost nothing changes. Yet a
service's judged state can change in only three ways:

* an up service's last heartbeat ages past service_down_time: the time is
  known in advance, from the heartbeat's own time;
* a service that is not up beats again;
* its record changes (registration, admin change, leave, delete), and every
  such change appends an event.

So after one full read the sweeper reads only the up services whose expiry
has come, the services that are not up, and the services the events since
the last sweep name (Sweeper._read_changed). A sweep then costs what changed
plus the fleet's down services, and an up service that keeps beating is read
about once per down time instead of once per sweep. A full read now and then
(`[events] full_sweep_interval`) is the safety net.

Drivers whose reading has no heartbeat time (tooz: a member is present or
not, and its time is the read's) cannot be scheduled this way; with them the
sweeper reads the whole fleet every sweep (Driver.beat_times).

Usage::

    schedule = ReadSchedule(down_time=60.0)
    schedule.learn(snapshot, read_started=time.monotonic())   # after every read
    uuids = schedule.due(time.monotonic(), watch_limit=5000)  # what the next sweep reads
    schedule.next_expiry()                                    # when to wake for a death
    schedule.sizes                                            # services per binary
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable, Mapping

from servicegroup.service import Snapshot, State


class ReadSchedule:
    """When each service must next be read; not thread-safe (the sweeper's thread only)."""

    def __init__(self, down_time: float, by_binary: Mapping[str, float] | None = None) -> None:
        self.down_time = down_time
        # Binaries with their own down time ([binaries]): their services expire by it.
        self.by_binary = dict(by_binary or {})
        # (monotonic expiry, uuid) of up services; stale entries are skipped
        # (_expiry holds the current one), so a re-read needs no heap removal.
        self._heap: list[tuple[float, str]] = []
        self._expiry: dict[str, float] = {}
        # Services not up (down, unknown, never beaten): read every sweep, or
        # in turns when there are more than a sweep may read (due()).
        self._watched: set[str] = set()
        self._turns: deque[str] = deque()
        self._binary: dict[str, str] = {}
        self.sizes: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._binary)

    def learn(self, snapshot: Snapshot, read_started: float) -> None:
        """Schedule each service of a read: up ones at their expiry, the others every sweep.

        Ages are the backend's: expiry = read_started + (last heartbeat -
        the backend's now at the read) + the binary's down time, so no local
        wall clock enters (as in seconds_to_expiry).
        """
        read_at = snapshot.read_at
        own, default = self.by_binary, self.down_time
        for status in snapshot.statuses:
            service = status.service
            uuid = service.uuid
            if self._binary.get(uuid) != service.binary:
                self._count(uuid, service.binary)
            beat = status.last_heartbeat
            if status.state is State.UP and beat is not None and read_at is not None:
                down_time = own.get(service.binary, default) if own else default
                expiry = read_started + (beat - read_at).total_seconds() + down_time
                if self._expiry.get(uuid) != expiry:
                    self._expiry[uuid] = expiry
                    heapq.heappush(self._heap, (expiry, uuid))
                    if len(self._heap) > 2 * len(self._expiry) + 1024:  # mostly stale
                        self._heap = [(when, u) for u, when in self._expiry.items()]
                        heapq.heapify(self._heap)
                self._watched.discard(uuid)
            else:
                self._expiry.pop(uuid, None)
                self._watch(uuid)

    def watch(self, uuids: Iterable[str]) -> None:
        """Read these every sweep until a read says otherwise (a read of them failed)."""
        for uuid in uuids:
            self._expiry.pop(uuid, None)
            self._watch(uuid)

    def forget(self, uuids: Iterable[str]) -> None:
        """Services that no longer exist (deleted): never read again."""
        for uuid in uuids:
            self._expiry.pop(uuid, None)
            self._watched.discard(uuid)
            binary = self._binary.pop(uuid, None)
            if binary is not None:
                self._uncount(binary)

    def due(self, now: float, watch_limit: int | None = None) -> set[str]:
        """The services the sweep at monotonic `now` must read: expired up ones and the not up.

        With more than `watch_limit` services not up (a fleet's cold start:
        every new registration is down until it beats), a sweep reads that
        many of them, the longest unread first, so a sweep's cost stays
        bounded and each is read again within ceil(not up / limit) sweeps.
        Only up events wait for that; down events come from the expiries.
        """
        due = self._take_watched(watch_limit)
        heap, expiry = self._heap, self._expiry
        while heap and heap[0][0] <= now:
            when, uuid = heapq.heappop(heap)
            if expiry.get(uuid) == when:
                del expiry[uuid]
                due.add(uuid)
        return due

    def _watch(self, uuid: str) -> None:
        if uuid not in self._watched:
            self._watched.add(uuid)
            self._turns.append(uuid)

    def _take_watched(self, limit: int | None) -> set[str]:
        """Up to `limit` watched services, the longest unread first; learn() puts back
        those still not up."""
        watched, turns = self._watched, self._turns
        if limit is None or len(watched) <= limit:
            taken = set(watched)
            watched.clear()
            turns.clear()
            return taken
        taken = set()
        while len(taken) < limit and turns:
            uuid = turns.popleft()
            if uuid in watched:  # skip the ones that came up or went away meanwhile
                watched.discard(uuid)
                taken.add(uuid)
        return taken

    def next_expiry(self) -> float | None:
        """The earliest expiry of an up service (monotonic), or None."""
        heap, expiry = self._heap, self._expiry
        while heap and expiry.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _count(self, uuid: str, binary: str) -> None:
        old = self._binary.get(uuid)
        if old is not None:
            self._uncount(old)
        self._binary[uuid] = binary
        self.sizes[binary] += 1

    def _uncount(self, binary: str) -> None:
        self.sizes[binary] -= 1
        if not self.sizes[binary]:
            del self.sizes[binary]
