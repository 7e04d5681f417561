"""The heartbeat thread behind join(): it never dies and never floods the log.

nova's reporters logged a traceback on every failed beat, or died silently on
an unexpected error; an operator saw either noise or nothing. Here an outage
is one warning when it starts and one info line when it ends, and the thread
keeps going whatever a beat raises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from servicegroup.clock import SYSTEM_CLOCK, Clock
from servicegroup.exceptions import BackendError
from servicegroup.service import Service

LOG = logging.getLogger(__name__)


class Reporter:
    """Heartbeats `service` now and then every `interval` seconds until stopped."""

    def __init__(
        self,
        service: Service,
        beat: Callable[[Service], None],
        interval: float,
        backend: str,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.service = service
        self.interval = interval
        self.backend = backend
        self._beat = beat
        self._clock = clock
        self._stop = threading.Event()
        self.consecutive_failures = 0
        self.total_failures = 0
        self.beats = 0
        self._lost_at: float | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"reporter-{service.binary}@{service.host}", daemon=True
        )

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures == 0

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        # Fixed-rate schedule on the monotonic clock: a slow beat does not push
        # every later beat back, and a beat longer than the interval is not
        # followed by a burst of catch-up beats.
        next_at = self._clock.monotonic()
        while not self._stop.is_set():
            self.beat_once()
            next_at += self.interval
            now = self._clock.monotonic()
            if next_at < now:
                next_at = now
            if self._stop.wait(next_at - now):
                return

    def beat_once(self) -> bool:
        """One heartbeat with the outage bookkeeping; True when it went through."""
        svc = self.service
        try:
            self._beat(svc)
        except Exception as exc:  # a reporter that dies is a silent outage
            self.consecutive_failures += 1
            self.total_failures += 1
            if self.consecutive_failures == 1:
                self._lost_at = self._clock.monotonic()
                LOG.warning(
                    "lost connection to %s while reporting %s on %s: %s; retrying every %gs",
                    self.backend,
                    svc.binary,
                    svc.host,
                    exc,
                    self.interval,
                    exc_info=not isinstance(exc, BackendError),
                )
            else:
                LOG.debug("heartbeat of %s on %s failed again: %s", svc.binary, svc.host, exc)
            return False
        self.beats += 1
        if self.consecutive_failures:
            lost_for = self._clock.monotonic() - (self._lost_at or 0.0)
            LOG.info(
                "recovered connection to %s for %s on %s after %d failed heartbeats (%.1fs)",
                self.backend,
                svc.binary,
                svc.host,
                self.consecutive_failures,
                lost_for,
            )
            self.consecutive_failures = 0
        return True
