"""Following the event stream from a thread: what a caller of ServiceGroup.watch() gets.

Client side only: it reads the stream the sweeping leader writes
(leader/sweeper.py) through the public API, so it works in any process,
leader or not.

Usage::

    watcher = sg.watch(lambda event: print(event.as_dict()), binary="nova-compute")
    ...
    watcher.stop()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from servicegroup.db.event_log import Event, EventBatch
from servicegroup.exceptions import BackendError
from servicegroup.failure_log import FailureLog

LOG = logging.getLogger(__name__)


class EventSource(Protocol):
    """Where a watcher reads events: ServiceGroup is one."""

    def events(
        self, since: int | None = None, binary: str | None = None, host: str | None = None
    ) -> EventBatch: ...


class Watcher:
    """Calls `callback(event)` for each new event, on a thread, until stop().

    A callback that raises does not stop it: the error is logged once (and
    again only after a success), counted, and the next event follows.
    The cursor moves past every event, failed or not; a consumer that needs
    exactly-once keeps its own cursor with its own state (doc/events.md).
    """

    def __init__(
        self,
        source: EventSource,
        callback: Callable[[Event], object],
        since: int | None = None,
        binary: str | None = None,
        host: str | None = None,
        poll: float = 0.1,
    ) -> None:
        self.source = source
        self.callback = callback
        self.cursor = since or 0
        self.binary = binary
        self.host = host
        self.poll = poll
        self.errors = 0
        self._logged = False
        self._read_failures = FailureLog(LOG, "event watcher: cannot read events: %s")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event watcher", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self.source.events(since=self.cursor, binary=self.binary, host=self.host)
                self._read_failures.ended()
            except BackendError as exc:
                self._read_failures.failed(exc)
                self._stop.wait(self.poll)
                continue
            for event in batch.events:
                if self._stop.is_set():
                    return
                self._deliver(event)
                self.cursor = event.id
            self.cursor = max(self.cursor, batch.cursor)
            if not batch.events:
                self._stop.wait(self.poll)

    def _deliver(self, event: Event) -> None:
        try:
            self.callback(event)
        except Exception:
            self.errors += 1
            if not self._logged:
                self._logged = True
                LOG.exception("event watcher: callback failed on event %s", event.id)
        else:
            self._logged = False
