"""leader/notifier.py with a fake bus: order, the cursor in SQL, retries, leader changes.

SQLite is the records database (a file, nothing to start); the bus is a fake
that records what it is given and refuses when told to. The real RabbitMQ
is in tests/functional/test_notifications.py.
"""

from __future__ import annotations

import logging
import threading
import uuid as uuid_mod
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from oslo_config import cfg
from sqlalchemy import Engine, select, update

from servicegroup.api import ServiceGroup
from servicegroup.conf import make_conf
from servicegroup.db import event_log, notification_cursor
from servicegroup.db.engine import writing
from servicegroup.db.event_log import Event
from servicegroup.db.models import leases
from servicegroup.leader import lease
from servicegroup.leader.notifier import (
    CURSOR_EVERY,
    PAYLOAD_VERSION,
    LogSender,
    Notifier,
    event_type,
    message,
    message_id,
    notifier_from_conf,
    payload,
)
from servicegroup.server.metrics import notifier_metrics
from tests.helpers import PATIENCE, wait_for


class FakeBus:
    """Records each message the bus took; refuses the next `refuse` sends."""

    def __init__(self) -> None:
        self.taken: list[dict[str, Any]] = []
        self.attempts = 0
        self.refuse = 0
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        self.attempts += 1
        if self.refuse > 0:
            self.refuse -= 1
            raise ConnectionError("bus away")
        self.taken.append(message)

    def close(self) -> None:
        self.closed = True

    def event_ids(self) -> list[int]:
        return [m["payload"]["servicegroup_object.data"]["event_id"] for m in self.taken]

    def message_ids(self) -> list[str]:
        return [m["message_id"] for m in self.taken]


def take_lease(engine: Engine, holder: str) -> lease.Hold:
    """The sweeper lease for `holder`, taking it from whoever has it."""
    with writing(engine) as conn:
        conn.execute(update(leases).values(expires_at=datetime(2000, 1, 1)))
    epoch = lease.acquire(engine, lease.SWEEPER, holder, None, 60.0)
    assert epoch
    return lease.Hold(lease.SWEEPER, holder, epoch, 60.0)


def lead(notifier: Notifier, holder: str) -> lease.Hold:
    """Take the lease for `holder` and tell the notifier, as the sweeper does."""
    hold = take_lease(notifier.engine, holder)
    notifier.lead(hold)
    return hold


def make_notifier(engine: Engine, bus: FakeBus, **options: Any) -> Notifier:
    options.setdefault("poll_interval", 0.01)
    options.setdefault("retry_interval", 0.001)
    options.setdefault("retry_interval_max", 0.004)
    options.setdefault("publisher_id", "servicegroup:test")
    return Notifier(engine, bus, **options)


def stored_cursor(engine: Engine) -> int | None:
    with engine.connect() as conn:
        return notification_cursor.read(conn)


@pytest.fixture
def sg(make_group: Callable[..., ServiceGroup], sqlite_url: str) -> ServiceGroup:
    return make_group(sqlite_url)


def test_payload_is_a_versioned_object_with_the_event() -> None:
    event = Event(7, "u-1", "h1", "nova-compute", "up", "down", "heartbeat_timeout", NOW)
    body = payload(event)
    assert body["servicegroup_object.name"] == "EventPayload"
    assert body["servicegroup_object.namespace"] == "servicegroup"
    assert body["servicegroup_object.version"] == PAYLOAD_VERSION
    assert body["servicegroup_object.data"] == {
        "event_id": 7,
        "service_id": "u-1",
        "host": "h1",
        "binary": "nova-compute",
        "previous": "up",
        "state": "down",
        "cause": "heartbeat_timeout",
        "time": "2026-12-07T20:00:00.000000Z",
        "details": None,
    }
    note = message(event, "servicegroup:leader-1")
    assert note["event_type"] == "servicegroup.service.update"
    assert note["priority"] == "INFO"
    assert note["publisher_id"] == "servicegroup:leader-1"
    assert note["payload"] == body


NOW = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        ("registered", "servicegroup.service.create"),
        ("deleted", "servicegroup.service.delete"),
        ("heartbeat", "servicegroup.service.update"),
        ("forced_down", "servicegroup.service.update"),
        ("disabled", "servicegroup.service.update"),
        ("claim_revoked", "servicegroup.claim.update"),
        ("claim_force_released", "servicegroup.claim.update"),
    ],
)
def test_event_types_follow_novas_object_action_naming(cause: str, expected: str) -> None:
    assert event_type(Event(1, "u", "h", "b", "down", "down", cause, NOW)) == expected


def test_it_starts_at_the_streams_end_then_sends_each_event_in_order(sg: ServiceGroup) -> None:
    before = sg.register("old-host", "nova-compute")
    bus = FakeBus()
    notifier = make_notifier(sg.engine, bus)
    hold = lead(notifier, "leader-a")
    assert notifier.send_pending(hold) == 0  # seeds the cursor at the end: no history replay
    assert stored_cursor(sg.engine) == event_log.last_id(sg.engine)

    svc = sg.register("h1", "nova-compute")
    sg.update(svc, disabled=True, disabled_reason="maintenance")
    sg.update(svc, forced_down=True)
    sg.delete(before)
    events = event_log.read(sg.engine, since=stored_cursor(sg.engine) or 0)
    assert notifier.send_pending(hold) == len(events) == 4

    assert bus.event_ids() == [e.id for e in events]
    assert [m["event_type"] for m in bus.taken] == [
        "servicegroup.service.create",
        "servicegroup.service.update",
        "servicegroup.service.update",
        "servicegroup.service.delete",
    ]
    causes = [m["payload"]["servicegroup_object.data"]["cause"] for m in bus.taken]
    assert causes == ["registered", "disabled", "forced_down", "deleted"]
    assert stored_cursor(sg.engine) == events[-1].id
    assert notifier.send_pending(hold) == 0  # nothing new: nothing sent again
    assert notifier.stats.sent == 4
    assert notifier.stats.cursor == events[-1].id


def test_a_refused_send_is_retried_in_order_and_nothing_after_it_goes_first(
    sg: ServiceGroup,
) -> None:
    bus = FakeBus()
    notifier = make_notifier(sg.engine, bus)
    hold = lead(notifier, "leader-a")
    notifier.send_pending(hold)
    for n in range(5):
        sg.register(f"h{n}", "nova-compute")
    bus.refuse = 3
    assert notifier.send_pending(hold) == 5
    expected = [e.id for e in event_log.read(sg.engine)]
    assert bus.event_ids() == expected
    assert bus.attempts == 8
    assert (notifier.stats.sent, notifier.stats.retried, notifier.stats.dropped) == (5, 3, 0)


def test_a_daemon_that_does_not_hold_the_lease_sends_nothing(sg: ServiceGroup) -> None:
    bus = FakeBus()
    notifier = make_notifier(sg.engine, bus)
    old = lead(notifier, "leader-a")
    notifier.send_pending(old)
    sg.register("h1", "nova-compute")
    take_lease(sg.engine, "leader-b")  # a takeover: leader-a's epoch is over
    assert notifier.send_pending(old) == 0
    assert bus.taken == []


def test_a_new_leader_resumes_from_the_cursor_in_sql(sg: ServiceGroup) -> None:
    bus = FakeBus()
    first = make_notifier(sg.engine, bus)
    hold_a = lead(first, "leader-a")
    first.send_pending(hold_a)
    sg.register("h1", "nova-compute")
    first.send_pending(hold_a)
    sg.register("h2", "nova-compute")
    sg.register("h3", "nova-compute")

    second = make_notifier(sg.engine, bus)  # another daemon: nothing in memory
    hold_b = lead(second, "leader-b")
    assert second.send_pending(hold_b) == 2
    assert bus.event_ids() == [e.id for e in event_log.read(sg.engine)]  # each once


def test_losing_the_lease_between_send_and_cursor_write_makes_the_successor_resend(
    sg: ServiceGroup,
) -> None:
    """The successor sends the same message again: listeners drop it (doc/notifications.md)."""
    bus = FakeBus()
    hold_a = take_lease(sg.engine, "leader-a")
    hold_b: list[lease.Hold] = []

    class DeposedMidSend(FakeBus):
        def send(self, message: dict[str, Any]) -> None:
            super().send(message)
            if not hold_b:  # the takeover lands after the bus took it
                hold_b.append(take_lease(sg.engine, "leader-b"))

    deposed = DeposedMidSend()
    first = make_notifier(sg.engine, deposed)
    first.lead(hold_a)
    first.send_pending(hold_a)
    sg.register("h1", "nova-compute")
    assert first.send_pending(hold_a) == 1  # sent...
    assert stored_cursor(sg.engine) == 0  # ...but the deposed leader's cursor write refused
    assert len(deposed.taken) == 1

    second = make_notifier(sg.engine, bus)
    second.lead(hold_b[0])
    assert second.send_pending(hold_b[0]) == 1
    assert bus.event_ids() == deposed.event_ids()
    assert bus.message_ids() == deposed.message_ids()  # the same message, whoever sends it


def test_a_deposed_leader_stops_at_its_next_cursor_write_leaving_at_most_cursor_every(
    sg: ServiceGroup,
) -> None:
    """What a successor sends again fits an oslo.messaging listener's duplicate window."""
    hold_a = take_lease(sg.engine, "leader-a")
    hold_b: list[lease.Hold] = []

    class DeposedAfterFirstSend(FakeBus):
        def send(self, message: dict[str, Any]) -> None:
            super().send(message)
            if not hold_b:
                hold_b.append(take_lease(sg.engine, "leader-b"))

    deposed = DeposedAfterFirstSend()
    first = make_notifier(sg.engine, deposed)
    first.lead(hold_a)
    first.send_pending(hold_a)
    for n in range(3 * CURSOR_EVERY):
        sg.register(f"h{n}", "nova-compute")
    assert first.send_pending(hold_a) == CURSOR_EVERY  # then its cursor write is refused
    assert stored_cursor(sg.engine) == 0

    bus = FakeBus()
    second = make_notifier(sg.engine, bus)
    second.lead(hold_b[0])
    assert second.send_pending(hold_b[0]) == 3 * CURSOR_EVERY
    repeated = set(deposed.message_ids()) & set(bus.message_ids())
    assert len(repeated) == CURSOR_EVERY
    assert bus.message_ids()[:CURSOR_EVERY] == deposed.message_ids()


def test_the_cursor_is_never_more_than_cursor_every_confirmed_sends_behind(
    sg: ServiceGroup,
) -> None:
    """Before each send, the bus has CURSOR_EVERY - 1 events past the stored cursor at most:
    with the send in flight, CURSOR_EVERY at most for a successor to send again."""
    behind: list[int] = []

    class Watching(FakeBus):
        def send(self, message: dict[str, Any]) -> None:
            if self.taken:  # ids have no holes: the last one taken says how many are past it
                behind.append(self.event_ids()[-1] - (stored_cursor(sg.engine) or 0))
            super().send(message)

    bus = Watching()
    notifier = make_notifier(sg.engine, bus)
    hold = lead(notifier, "leader-a")
    notifier.send_pending(hold)
    for n in range(3 * CURSOR_EVERY + 5):
        sg.register(f"h{n}", "nova-compute")
    assert notifier.send_pending(hold) == 3 * CURSOR_EVERY + 5
    assert max(behind) == CURSOR_EVERY - 1
    assert stored_cursor(sg.engine) == event_log.last_id(sg.engine)


def test_a_message_id_is_the_events_own_whoever_sends_it_and_however_often() -> None:
    event = Event(7, "6f1c0f9e-8a55-4c38-9d63-0b7e2d0c1d2a", "h1", "b", "up", "down", "leave", NOW)
    first = message(event, "servicegroup:ctl-1")
    again = message(event, "servicegroup:ctl-2")  # another leader, another publisher_id
    assert first["message_id"] == again["message_id"] == message_id(event)
    assert first["message_id"] == message(event, "servicegroup:ctl-1")["message_id"]
    assert str(uuid_mod.UUID(first["message_id"])) == first["message_id"]
    # The same event read back from the stream by a successor: an equal Event.
    reread = Event(7, event.service_id, "h1", "b", "up", "down", "leave", NOW)
    assert message_id(reread) == message_id(event)


@pytest.mark.parametrize(
    "other",
    [
        Event(8, "6f1c0f9e-8a55-4c38-9d63-0b7e2d0c1d2a", "h1", "b", "up", "down", "leave", NOW),
        # Event 7 of another deployment: another service's uuid.
        Event(7, "0b7e2d0c-1d2a-4c38-9d63-6f1c0f9e8a55", "h1", "b", "up", "down", "leave", NOW),
        # Event 7 of a deployment whose stream restarted: another time.
        Event(
            7,
            "6f1c0f9e-8a55-4c38-9d63-0b7e2d0c1d2a",
            "h1",
            "b",
            "up",
            "down",
            "leave",
            NOW + timedelta(microseconds=1),
        ),
    ],
)
def test_different_events_have_different_message_ids(other: Event) -> None:
    event = Event(7, "6f1c0f9e-8a55-4c38-9d63-0b7e2d0c1d2a", "h1", "b", "up", "down", "leave", NOW)
    assert message_id(other) != message_id(event)


def test_every_event_of_a_stream_has_its_own_message_id(sg: ServiceGroup) -> None:
    for n in range(50):
        sg.register(f"h{n}", "nova-compute")
    events = event_log.read(sg.engine)
    assert len({message_id(e) for e in events}) == len(events) == 50


def test_a_failed_cursor_write_is_retried_without_sending_again(sg: ServiceGroup) -> None:
    bus = FakeBus()
    notifier = make_notifier(sg.engine, bus)
    hold = lead(notifier, "leader-a")
    notifier.send_pending(hold)
    sg.register("h1", "nova-compute")
    advance = notification_cursor.advance
    calls = {"n": 0}

    def failing_once(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database away")
        advance(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(notification_cursor, "advance", failing_once)
        with pytest.raises(RuntimeError):
            notifier.send_pending(hold)
        assert notifier.send_pending(hold) == 0
    assert len(bus.taken) == 1
    assert stored_cursor(sg.engine) == event_log.last_id(sg.engine)


def test_events_pruned_before_they_were_sent_are_counted_as_dropped(
    sg: ServiceGroup, caplog: pytest.LogCaptureFixture
) -> None:
    bus = FakeBus()
    notifier = make_notifier(sg.engine, bus)
    hold = lead(notifier, "leader-a")
    notifier.send_pending(hold)
    for n in range(3):
        sg.register(f"h{n}", "nova-compute")
    ids = [e.id for e in event_log.read(sg.engine)]
    with writing(sg.engine) as conn:  # the two oldest, as retention would
        conn.execute(
            event_log.service_events.delete().where(event_log.service_events.c.id < ids[-1])
        )
    with caplog.at_level(logging.ERROR, "servicegroup.leader.notifier"):
        assert notifier.send_pending(hold) == 1
    assert notifier.stats.dropped == 2
    assert bus.event_ids() == [ids[-1]]
    assert "pruned before they could be sent" in caplog.text


def test_the_thread_follows_leadership_and_a_stop_mid_outage_keeps_the_rest(
    sg: ServiceGroup,
) -> None:
    bus = FakeBus()
    notifier = make_notifier(sg.engine, bus).start()
    try:
        sg.register("h0", "nova-compute")  # before any lead: history, not sent
        hold = take_lease(sg.engine, "leader-a")
        notifier.lead(hold)
        wait_for(lambda: stored_cursor(sg.engine) is not None, "the cursor seeded")
        sg.register("h1", "nova-compute")
        notifier.wake()
        wait_for(lambda: len(bus.taken) == 1, "the registration sent")
        bus.refuse = 10**9  # the bus goes away for good
        sg.register("h2", "nova-compute")
        notifier.wake()
        wait_for(lambda: notifier.stats.retried >= 2, "retries")
    finally:
        notifier.stop()
    assert bus.closed
    assert len(bus.taken) == 1
    # What was not sent is still after the cursor, for the next leader.
    assert [e.host for e in event_log.read(sg.engine, since=stored_cursor(sg.engine) or 0)] == [
        "h2"
    ]


def test_a_hung_bus_does_not_hold_up_whoever_leads(sg: ServiceGroup) -> None:
    """The sweeper only calls lead() and wake(): neither waits for a send in progress."""
    entered, release = threading.Event(), threading.Event()

    class HungBus(FakeBus):
        def send(self, message: dict[str, Any]) -> None:
            entered.set()
            release.wait()
            super().send(message)

    bus = HungBus()
    notifier = make_notifier(sg.engine, bus).start()
    try:
        hold = take_lease(sg.engine, "leader-a")
        notifier.lead(hold)
        wait_for(lambda: stored_cursor(sg.engine) is not None, "the cursor seeded")
        sg.register("h1", "nova-compute")
        notifier.wake()
        assert entered.wait(PATIENCE), "the send never started"

        def sweeper_side() -> None:
            for _ in range(100):
                notifier.wake()
                notifier.lead(hold)

        caller = threading.Thread(target=sweeper_side)
        caller.start()
        caller.join(PATIENCE)  # a hang guard, not a timing
        assert not caller.is_alive(), "lead()/wake() waited for the hung bus"
        assert bus.taken == []
    finally:
        release.set()
        notifier.stop()
    assert len(bus.taken) == 1


def test_from_conf_builds_nothing_for_noop_and_a_log_sender_for_log(sg: ServiceGroup) -> None:
    assert notifier_from_conf(sg.engine, make_conf(), poll_interval=1.0) is None
    conf = make_conf(notifications__driver="log", notifications__publisher_id="sg:x")
    notifier = notifier_from_conf(sg.engine, conf, poll_interval=1.0)
    assert notifier is not None
    assert isinstance(notifier.sender, LogSender)
    assert notifier.publisher_id == "sg:x"


def test_an_unknown_driver_is_refused_naming_the_option() -> None:
    with pytest.raises((ValueError, cfg.Error)) as err:
        make_conf(notifications__driver="routing")
    assert "routing" in str(err.value)


def test_the_log_sender_logs_under_oslo_messagings_logger_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    note = message(Event(3, "u", "h", "b", None, "down", "registered", NOW), "p")
    with caplog.at_level(logging.INFO, "oslo.messaging.notification"):
        LogSender().send(note)
    record = caplog.records[-1]
    assert record.name == "oslo.messaging.notification.servicegroup.service.create"
    assert '"event_id": 3' in record.getMessage()


def test_metrics_count_sent_retried_dropped(sg: ServiceGroup) -> None:
    bus = FakeBus()
    notifier = make_notifier(sg.engine, bus)
    hold = lead(notifier, "leader-a")
    notifier.send_pending(hold)
    sg.register("h1", "nova-compute")
    bus.refuse = 2
    notifier.send_pending(hold)
    samples = {
        sample.name: sample.value
        for family in notifier_metrics(notifier.stats)
        for sample in family.samples
    }
    assert samples == {
        "servicegroup_notifications_sent_total": 1,
        "servicegroup_notifications_retried_total": 2,
        "servicegroup_notifications_dropped_total": 0,
        "servicegroup_notification_cursor": event_log.last_id(sg.engine),
    }


def test_the_cursor_never_moves_backwards(sg: ServiceGroup) -> None:
    with writing(sg.engine) as conn:
        notification_cursor.seed(conn, 1)
        notification_cursor.advance(conn, 10, 1)
        notification_cursor.advance(conn, 4, 2)
    assert stored_cursor(sg.engine) == 10
    with sg.engine.connect() as conn:
        epoch = conn.execute(select(notification_cursor.notification_cursors.c.epoch)).scalar()
    assert epoch == 1
