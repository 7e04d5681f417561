"""The last liveness outage this process saw, so silence during it is not taken for death.

While the liveness backend (or, for the db driver, the database) cannot be
read, nobody can write a heartbeat either. Without remembering that, a
backend back from an outage longer than the down time reads as a fleet that
died (every heartbeat stale) until each service's next beat lands. The state
rule (state.judge_all) takes the outage out of each heartbeat's age; this
module only keeps the times, on the injectable monotonic clock.

Usage::

    outages = Outages(clock, down_time=60.0)
    outages.seen()        # a read failed
    outages.ago()         # after a good read: (began, ended) seconds ago, or None
"""

from __future__ import annotations

import threading

from servicegroup.clock import Clock


class Outages:
    def __init__(self, clock: Clock, down_time: float) -> None:
        self.clock = clock
        self.down_time = down_time
        self._lock = threading.Lock()
        # Monotonic (start, end) of the last outage; end None while it lasts.
        self._last: tuple[float, float | None] | None = None

    def seen(self) -> None:
        """A read failed: an outage starts, or goes on."""
        now = self.clock.monotonic()
        with self._lock:
            last = self._last
            if last is None or (last[1] is not None and now - last[1] > self.down_time):
                self._last = (now, None)
            elif last[1] is not None:
                # Back down soon after coming back: one outage, the gap counted in it.
                self._last = (last[0], None)

    def ago(self) -> tuple[float, float] | None:
        """A read succeeded: the last outage as (began, ended) seconds ago, ending it.

        None once it is more than the down time past: every heartbeat older
        than its end is then past the down time in available time too, so
        nothing is left to excuse.
        """
        now = self.clock.monotonic()
        with self._lock:
            last = self._last
            if last is None:
                return None
            began, ended = last
            if ended is None:
                ended = now
                self._last = (began, ended)
            if now - ended > self.down_time:
                self._last = None
                return None
        return (now - began, now - ended)
