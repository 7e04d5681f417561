"""Notifications: the event stream, sent on the message bus by the sweeping leader.

Every event (up/down transitions, admin changes, registrations, deletes,
claim events: they all live in one stream, db/event_log.py) becomes one
versioned notification (doc/notifications.md), sent over oslo.messaging the
way nova sends `service.update`. The stream stays the source of truth; the
bus is told after the event committed, never instead of it.

Why a cursor in SQL, and its own thread
    The notifier reads "events after the cursor" (ids follow commit order,
    so nothing is skipped), sends them one at a time in id order, and then
    moves the cursor (db/notification_cursor.py) in a transaction that checks
    the sweeper lease. A bus that refuses a send gets the same event again,
    after retry_interval doubling up to retry_interval_max, and nothing after
    it goes first: an outage delays notifications and loses none. It runs on
    a thread of its own, so a slow or hung bus never delays a sweep; and a new
    leader resumes from the row, not from anyone's memory.

Exactly once: what is sent twice carries the same identity
    Only the lease holder sends, and only it moves the cursor. Two things
    can still put one event on the bus twice, and neither can be closed by
    the sender alone: a broker that stored a message and died before its
    confirm (the notifier, told only that the send failed, sends it again),
    and a leader that dies (or loses the lease) after a confirmed send and
    before its cursor write (its successor sends from the cursor). So every
    send of one event is the same message: `message_id` is derived from the
    event (message_id(): the same for every leader and every retry), and the
    AMQP `_unique_id` oslo.messaging's listeners dedupe by is that id too
    (dependency_internals.oslo_messaging_notify). A listener drops a repeat
    whose first copy it acknowledged among its last 16 messages; the cursor
    moves at least every CURSOR_EVERY (16) confirmed sends, so all a
    successor sends again is within that. Other consumers dedupe by
    `message_id` or `event_id`. The limits (a window shared with other
    publishers, a listener restarted in between) are in doc/notifications.md.
    The same leader never re-sends a confirmed event: it remembers what the
    bus confirmed under its epoch, so a cursor write that failed (the
    database away) is retried without resending, and before anything else.

Events pruned before they were sent (a bus away for longer than [events]
retention) cannot be sent; they are counted as dropped and logged.

Usage::

    notifier = notifier_from_conf(engine, conf, poll_interval=1.0)  # None: driver noop
    notifier.start()
    notifier.lead(hold)     # the sweeper, on taking the lease; lead(None) on losing it
    notifier.wake()         # the sweeper, after writing events: no poll wait
    notifier.stop()
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid as uuid_mod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from oslo_config import cfg
from sqlalchemy import Engine

from servicegroup import dependency_internals
from servicegroup.backend_errors import sql_errors
from servicegroup.db import event_log, notification_cursor
from servicegroup.db.engine import writing
from servicegroup.db.event_log import Event
from servicegroup.exceptions import BackendError
from servicegroup.failure_log import FailureLog
from servicegroup.leader import lease
from servicegroup.service import rfc3339

LOG = logging.getLogger(__name__)

# The payload's schema (doc/notifications.md): bump the minor version for an
# added field, the major one for anything a consumer could trip on.
PAYLOAD_NAME = "EventPayload"
PAYLOAD_VERSION = "1.0"
NAMESPACE = "servicegroup"
PRIORITY = "INFO"
# Events read per pass.
BATCH = 100
# The most confirmed sends between two cursor writes, so the most a leader
# dying before its cursor write leaves its successor to send again: an
# oslo.messaging listener remembers the ids of the last 16 messages it
# acknowledged (_MsgIdCache.DUP_MSG_CHECK_SIZE, pinned equal to this by
# tests/unit/test_dependency_internals.py) and drops a repeat among them.
CURSOR_EVERY = 16
# uuid5's namespace for message ids: ours alone, so no other name space collides.
MESSAGE_ID_NAMESPACE = uuid_mod.UUID("2abadda8-315f-4845-9e1a-f2540f1ab4fa")


def event_type(event: Event) -> str:
    """nova's naming: OBJECT.ACTION, under our own prefix."""
    if event.cause.startswith("claim_"):
        return f"{NAMESPACE}.claim.update"
    if event.cause == "registered":
        return f"{NAMESPACE}.service.create"
    if event.cause == "deleted":
        return f"{NAMESPACE}.service.delete"
    return f"{NAMESPACE}.service.update"


def payload(event: Event) -> dict[str, Any]:
    """The event as an oslo.versionedobjects primitive, as nova's payloads are sent.

    The keys are OVO's `<namespace>_object.*` with our namespace: nova's own
    are `nova_object.*` because nova's namespace is nova.
    """
    return {
        f"{NAMESPACE}_object.name": PAYLOAD_NAME,
        f"{NAMESPACE}_object.namespace": NAMESPACE,
        f"{NAMESPACE}_object.version": PAYLOAD_VERSION,
        f"{NAMESPACE}_object.data": {
            "event_id": event.id,
            "service_id": event.service_id,
            "host": event.host,
            "binary": event.binary,
            "previous": event.previous,
            "state": event.state,
            "cause": event.cause,
            "time": rfc3339(event.time),
            "details": event.details,
        },
    }


def message_id(event: Event) -> str:
    """The notification's id: the same for every send of the event, by any leader.

    Derived from the event as the stream holds it, which every leader reads
    alike: its id (unique within a deployment), its service's uuid (random
    at registration: no two deployments share one) and its commit time. Not
    the publisher_id nor the hostname: a successor on another host must
    send the same id.
    """
    name = f"{event.id}/{event.service_id}/{rfc3339(event.time)}"
    return str(uuid_mod.uuid5(MESSAGE_ID_NAMESPACE, name))


def message(event: Event, publisher_id: str) -> dict[str, Any]:
    """The notification as oslo.messaging's Notifier builds it (message format 2.0's body)."""
    return {
        "message_id": message_id(event),
        "publisher_id": publisher_id,
        "event_type": event_type(event),
        "priority": PRIORITY,
        "payload": payload(event),
        "timestamp": rfc3339(event.time),
    }


class Sender(Protocol):
    """Sends one notification, or raises; the notifier retries the same message."""

    def send(self, message: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class BusSender:
    """The `messagingv2` driver: each topic's TOPIC.info queue, over an oslo.messaging transport.

    oslo.messaging's Notifier logs and swallows a failed send, so a caller
    cannot know to retry, and gives each send a new AMQP `_unique_id`, so a
    listener cannot tell a repeat; dependency_internals.oslo_messaging_notify
    raises, and sends the message_id as the `_unique_id` (to every topic
    alike). A message that reached some topics is retried on the others only.
    """

    def __init__(self, conf: cfg.ConfigOpts, url: str | None, topics: Sequence[str]) -> None:
        import oslo_messaging  # the daemon without notifications never loads kombu

        self.topics = list(topics)
        self.transport = oslo_messaging.get_notification_transport(conf, url=url)
        self._targets = [oslo_messaging.Target(topic=f"{t}.{PRIORITY.lower()}") for t in topics]
        self._sent: tuple[str, set[str]] = ("", set())

    def send(self, message: dict[str, Any]) -> None:
        message_id, done = self._sent
        if message_id != message["message_id"]:
            done = set()
            self._sent = (message["message_id"], done)
        for target in self._targets:
            if target.topic in done:
                continue
            dependency_internals.oslo_messaging_notify(
                self.transport, target, message, uuid_mod.UUID(message["message_id"]).hex
            )
            done.add(target.topic)

    def close(self) -> None:
        self.transport.cleanup()


class LogSender:
    """The `log` driver: one line per notification, under oslo.messaging's logger names."""

    def send(self, message: dict[str, Any]) -> None:
        logger = logging.getLogger(f"oslo.messaging.notification.{message['event_type']}")
        logger.info("%s", json.dumps(message))

    def close(self) -> None:
        pass


@dataclass
class NotifierStats:
    """What /metrics shows: sends confirmed, sends refused (each retried), events lost."""

    sent: int = 0
    retried: int = 0
    dropped: int = 0
    cursor: int = 0  # the last id sent, as this daemon last knew it


class Notifier:
    """Sends the event stream to a Sender while this daemon leads the sweep."""

    def __init__(
        self,
        engine: Engine,
        sender: Sender,
        poll_interval: float,
        retry_interval: float,
        retry_interval_max: float,
        publisher_id: str,
        batch: int = BATCH,
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self.retry_interval_max = retry_interval_max
        self.publisher_id = publisher_id
        self.batch = batch
        self.stats = NotifierStats()
        self._hold: lease.Hold | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = FailureLog(
            LOG, "notifier: cannot read the event stream: %s", "notifier: database answers again"
        )
        # (epoch, last id) the bus confirmed while we held the lease at that epoch.
        self._confirmed = (0, 0)

    def start(self) -> Notifier:
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current send; what is not sent yet the next leader sends."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.sender.close()

    def lead(self, hold: lease.Hold | None) -> None:
        """The sweeper's lease as it now holds it, or None: only a holder sends."""
        self._hold = hold
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            hold = self._hold
            sent = 0
            if hold is not None:
                try:
                    sent = self.send_pending(hold)
                    self._failures.ended()
                except BackendError as exc:
                    self._failures.failed(exc)
                except Exception:
                    LOG.exception("notifier: unexpected error; notifications go on")
            if sent < self.batch:  # caught up (or not leading): wait for news
                self._wake.wait(self.poll_interval)
                self._wake.clear()

    def send_pending(self, hold: lease.Hold) -> int:
        """One pass: the events after the cursor, sent in order, then the cursor moved.

        Returns how many were sent; fewer than read when the pass stopped
        (leadership changed, or the notifier is stopping).
        """
        with sql_errors():
            with self.engine.connect() as conn:
                if not lease.holds(conn, hold.name, hold.holder, hold.epoch, lock=False):
                    return 0
                cursor = notification_cursor.read(conn)
            if cursor is None:
                with writing(self.engine) as conn:
                    if not lease.holds(conn, hold.name, hold.holder, hold.epoch):
                        return 0
                    cursor = notification_cursor.seed(conn, hold.epoch)
            confirmed_epoch, confirmed = self._confirmed
            if confirmed_epoch == hold.epoch and confirmed > cursor:
                self._advance(hold, cursor, confirmed)  # a write that failed last time
                cursor = confirmed
            events = event_log.read(self.engine, since=cursor, limit=self.batch)
        self.stats.cursor = cursor
        if not events:
            return 0
        self._count_pruned(cursor, events[0].id)
        last, written, sent = cursor, cursor, 0
        for event in events:
            if not self._send(event, hold):
                break
            last, sent = event.id, sent + 1
            self._confirmed = (hold.epoch, last)
            if sent % CURSOR_EVERY == 0:  # the successor's repeats stay in a listener's window
                if not self._advance(hold, written, last):
                    return sent
                written = last
        if last > written:
            self._advance(hold, written, last)
        return sent

    def _advance(self, hold: lease.Hold, cursor: int, last: int) -> bool:
        """Write the cursor as the leader; False (and nothing written) once deposed."""
        with sql_errors(), writing(self.engine) as conn:
            if not lease.holds(conn, hold.name, hold.holder, hold.epoch):
                LOG.warning(
                    "notifier: lease lost after sending events %d..%d; the next leader "
                    "sends them again, as the same messages (doc/notifications.md)",
                    cursor + 1,
                    last,
                )
                return False
            notification_cursor.advance(conn, last, hold.epoch)
        self.stats.cursor = last
        return True

    def _count_pruned(self, cursor: int, first: int) -> None:
        """Ids have no holes (db/event_log.py): a gap after the cursor was pruned unsent."""
        missing = first - cursor - 1
        if missing > 0:
            self.stats.dropped += missing
            LOG.error(
                "notifier: events %d..%d were pruned before they could be sent "
                "([events] retention is shorter than the bus was away)",
                cursor + 1,
                first - 1,
            )

    def _send(self, event: Event, hold: lease.Hold) -> bool:
        """Send until the bus takes it; False if we stopped leading (or are stopping) first."""
        note = message(event, self.publisher_id)
        delay = self.retry_interval
        while True:
            try:
                self.sender.send(note)
            except Exception as exc:
                self.stats.retried += 1
                LOG.warning(
                    "notifier: bus refused event %d (%s); again in %.3gs",
                    event.id,
                    exc,
                    delay,
                )
                if self._stop.wait(delay) or self._hold != hold:
                    return False
                delay = min(delay * 2, self.retry_interval_max)
                continue
            self.stats.sent += 1
            return True


def notifier_from_conf(
    engine: Engine, conf: cfg.ConfigOpts, poll_interval: float
) -> Notifier | None:
    """The notifier `[notifications]` asks for, or None when its driver is noop."""
    group = conf.notifications
    driver: str = group.driver
    if driver == "noop":
        return None
    sender: Sender = (
        LogSender() if driver == "log" else BusSender(conf, group.transport_url, group.topics)
    )
    return Notifier(
        engine,
        sender,
        poll_interval=poll_interval,
        retry_interval=group.retry_interval,
        retry_interval_max=group.retry_interval_max,
        publisher_id=group.publisher_id or f"{NAMESPACE}:{socket.gethostname()}",
    )
