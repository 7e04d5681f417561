"""Notifications on a real RabbitMQ, heard by a real oslo.messaging notification listener.

One throwaway broker for the module (tests/servers.py RabbitMQServer: it takes
a few seconds to start), PostgreSQL for the records (the lease's row locks are
real there), a real Sweeper leading with [notifications] driver = messagingv2.
The listener is oslo.messaging's own, as Masakari's or Aodh's would be, with
one worker: it then handles (and acknowledges) messages in the order it
receives them, so "heard in order" and "a repeat arrived after its first
copy was acknowledged" are facts of the test, not of the timing.
"""

from __future__ import annotations

import logging
import threading
import uuid as uuid_mod
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from servicegroup.api import ServiceGroup
from servicegroup.db import event_log, notification_cursor
from servicegroup.db.event_log import Event
from servicegroup.leader import lease
from servicegroup.leader.notifier import CURSOR_EVERY, PAYLOAD_VERSION, BusSender, Notifier, message
from servicegroup.leader.sweeper import Sweeper
from tests.conftest import empty_tables
from tests.helpers import wait_for
from tests.notification_listener import DATA, Collector, listening
from tests.servers import RabbitMQServer

# Durable queues and exchanges, so queued notifications outlive a broker
# restart, as doc/operations.md advises.
RABBIT_CONF = "[oslo_messaging_rabbit]\namqp_durable_queues = true\n"
RESTART_PATIENCE = 90.0  # the broker's restart plus the backlog: a hang guard


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "servicegroup.conf"
    path.write_text(RABBIT_CONF)
    return str(path)


@pytest.fixture
def topic() -> str:
    return f"sgtest_{uuid_mod.uuid4().hex[:8]}"


@pytest.fixture
def listener(rabbitmq_server: RabbitMQServer, config_file: str, topic: str) -> Iterator[Collector]:
    """A started oslo.messaging notification listener on TOPIC.info, before anything is sent."""
    with listening(config_file, rabbitmq_server.url, topic) as collector:
        yield collector


def group_options(rabbitmq_server: RabbitMQServer, config_file: str, topic: str) -> dict:
    return {
        "config_file": config_file,
        "events__sweep_interval": 0.05,
        "claims__grace": 0.0,
        "notifications__driver": "messagingv2",
        "notifications__transport_url": rabbitmq_server.url,
        "notifications__topics": [topic],
        "notifications__publisher_id": "servicegroup:test-leader",
        "notifications__retry_interval": 0.05,
        "notifications__retry_interval_max": 0.5,
    }


@pytest.fixture
def leading(
    postgresql_db: str,
    make_group: Callable[..., ServiceGroup],
    rabbitmq_server: RabbitMQServer,
    config_file: str,
    topic: str,
    listener: Collector,
) -> Iterator[tuple[ServiceGroup, Sweeper]]:
    """A group and its started sweeper, leading, its notifier's cursor seeded."""
    empty_tables(postgresql_db)
    group = make_group(postgresql_db, **group_options(rabbitmq_server, config_file, topic))
    sweeper = Sweeper(group, group.conf).start()
    try:
        wait_for(lambda: sweeper.stats.leader, "the sweeper to lead")
        wait_for(lambda: cursor(group) is not None, "the notifier's cursor seeded")
        yield group, sweeper
    finally:
        sweeper.stop()


def cursor(group: ServiceGroup) -> int | None:
    with group.engine.connect() as conn:
        return notification_cursor.read(conn)


def stream_ids(group: ServiceGroup, since: int) -> list[int]:
    return [event.id for event in event_log.read(group.engine, since=since)]


def test_every_kind_of_event_arrives_once_in_order_versioned(
    leading: tuple[ServiceGroup, Sweeper], listener: Collector
) -> None:
    group, sweeper = leading
    start = cursor(group) or 0
    compute = group.register("compute-1", "nova-compute")
    reporter = group.join(compute)
    wait_for(
        lambda: any(e.cause == "heartbeat" for e in event_log.read(group.engine, start)),
        "the leader's down -> up transition",
    )
    group.update(compute, disabled=True, disabled_reason="maintenance")
    group.update(compute, disabled=False)
    claim = group.claim(compute, "instance", "vm-1", "rebuilding")
    group.force_release(claim.resource_type, claim.resource_id, "stuck")
    group.claim(compute, "instance", "vm-2", "migrating")
    reporter.stop()
    group.update(compute, forced_down=True)  # the owner down: the leader recovers vm-2
    wait_for(
        lambda: any(e.cause == "claim_recovered" for e in event_log.read(group.engine, start)),
        "the recovery's claim events",
    )
    group.delete(compute)
    expected = stream_ids(group, start)
    wait_for(lambda: len(listener.event_ids()) >= len(expected), "every notification")

    heard = listener.event_ids()
    assert heard == expected, f"heard {heard}, the stream has {expected}"  # once each, in order
    events = {e.id: e for e in event_log.read(group.engine, start)}
    for note in listener.heard:
        payload = note["payload"]
        assert payload["servicegroup_object.name"] == "EventPayload"
        assert payload["servicegroup_object.version"] == PAYLOAD_VERSION
        assert note["publisher_id"] == "servicegroup:test-leader"
        event = events[payload[DATA]["event_id"]]
        assert payload[DATA]["cause"] == event.cause
        assert payload[DATA]["state"] == event.state
        assert payload[DATA]["service_id"] == compute.uuid
    kinds = [(note["event_type"], note["payload"][DATA]["cause"]) for note in listener.heard]
    for wanted in [
        ("servicegroup.service.create", "registered"),
        ("servicegroup.service.update", "heartbeat"),  # down -> up: a transition
        ("servicegroup.service.update", "disabled"),
        ("servicegroup.service.update", "enabled"),
        ("servicegroup.claim.update", "claim_force_released"),
        ("servicegroup.service.update", "forced_down"),
        ("servicegroup.claim.update", "claim_revoked"),
        ("servicegroup.claim.update", "claim_recovered"),
        ("servicegroup.service.delete", "deleted"),
    ]:
        assert wanted in kinds
    assert kinds[0] == ("servicegroup.service.create", "registered")
    assert kinds[-1] == ("servicegroup.service.delete", "deleted")
    wait_for(lambda: cursor(group) == expected[-1], "the cursor at the last event")
    assert sweeper.notifier is not None
    assert sweeper.notifier.stats.sent == len(expected)
    assert sweeper.notifier.stats.dropped == 0


def test_a_rabbitmq_restart_mid_stream_loses_nothing_and_repeats_nothing(
    leading: tuple[ServiceGroup, Sweeper],
    listener: Collector,
    rabbitmq_server: RabbitMQServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Transitions keep coming while the broker is killed -9 and started again.

    The publish in flight when the broker died may have been stored (or
    handed to the listener) before its confirm was lost; the notifier, told
    only that it failed, sends it again, as the same message: the listener
    drops the repeat (doc/notifications.md). Each event is heard once.
    """
    caplog.set_level(logging.ERROR, "oslo_messaging._drivers.amqpdriver")
    group, sweeper = leading
    assert sweeper.notifier is not None
    start = cursor(group) or 0
    services = [group.register(f"compute-{n}", "nova-compute") for n in range(4)]
    stop = threading.Event()
    rounds = {"n": 0}

    def transitions() -> None:
        """Each round forces every service down then back: two events each."""
        while not stop.is_set():
            for svc in services:
                group.update(svc, forced_down=True)
                group.update(svc, forced_down=False)
            rounds["n"] += 1
            stop.wait(0.05)

    writer = threading.Thread(target=transitions, name="transitions")
    writer.start()
    try:
        wait_for(lambda: len(listener.event_ids()) >= 20, "notifications before the restart")
        rabbitmq_server.kill()
        before_restart = rounds["n"]
        rabbitmq_server.start()
        # Transitions committed while the broker was away, and after.
        wait_for(lambda: rounds["n"] >= before_restart + 3, "transitions after the restart")
    finally:
        stop.set()
        writer.join()
    expected = stream_ids(group, start)
    # A repeat is sent before the events after it, and the listener keeps the order.
    wait_for(
        lambda: expected[-1] in listener.event_ids(),
        "the backlog after the restart",
        patience=RESTART_PATIENCE,
    )
    wait_for(lambda: cursor(group) == expected[-1], "the cursor at the last event")
    heard = listener.event_ids()
    twice = sorted({i for i in heard if heard.count(i) > 1})
    stats = sweeper.notifier.stats
    # The broker's redeliveries of what the listener handled before the kill, and our
    # resend of a send in flight, alike: the listener logs each repeat it drops.
    repeats = caplog.text.count("ignoring duplicate message")
    print(
        f"FIGURE notifications across a RabbitMQ kill -9 + restart: {len(expected)} events, "
        f"{stats.sent} sent, {stats.retried} sends refused and retried, {stats.dropped} dropped, "
        f"{repeats} repeats dropped by the listener, {len(heard) - len(set(heard))} heard twice"
    )
    assert not twice, f"heard twice: {twice}"
    assert heard == expected, f"lost or out of order: {sorted(set(expected) - set(heard))}"
    assert stats.retried > 0  # the outage was seen, and ridden out


def test_a_new_leader_resumes_from_the_cursor_each_event_once(
    postgresql_db: str,
    make_group: Callable[..., ServiceGroup],
    rabbitmq_server: RabbitMQServer,
    config_file: str,
    topic: str,
    listener: Collector,
) -> None:
    """Two daemons on one database: the leader stops mid-stream, the other takes over."""
    empty_tables(postgresql_db)
    options = group_options(rabbitmq_server, config_file, topic)
    first, second = make_group(postgresql_db, **options), make_group(postgresql_db, **options)
    old = Sweeper(first, first.conf, holder="daemon-a").start()
    new = Sweeper(second, second.conf, holder="daemon-b")
    running = [old]
    try:
        wait_for(lambda: old.stats.leader, "daemon-a to lead")
        wait_for(lambda: cursor(first) is not None, "the cursor seeded")
        start = cursor(first) or 0
        services = [first.register(f"compute-{n}", "nova-compute") for n in range(3)]
        for svc in services:  # admin changes from daemon-a's side while it leads
            first.update(svc, forced_down=True)
        wait_for(lambda: len(listener.event_ids()) >= 6, "daemon-a's notifications")
        running.remove(old)
        old.stop()
        running.append(new.start())
        wait_for(lambda: new.stats.leader, "daemon-b to take the lease over")
        for svc in services:
            second.update(svc, forced_down=False)
        second.delete(services[0])
        expected = stream_ids(second, start)
        wait_for(lambda: len(listener.event_ids()) >= len(expected), "every notification")
    finally:
        for sweeper in running:
            sweeper.stop()
    heard = listener.event_ids()
    assert heard == expected, f"heard {heard}, the stream has {expected}"  # across the hand-over
    publishers = {note["publisher_id"] for note in listener.heard}
    assert publishers == {"servicegroup:test-leader"}
    assert old.notifier is not None and new.notifier is not None
    assert old.notifier.stats.sent >= 6
    sent = (old.notifier.stats.sent, new.notifier.stats.sent)
    assert sum(sent) == len(expected), f"sent {sent} by daemon-a, daemon-b"


def bus_sender(rabbitmq_server: RabbitMQServer, config_file: str, topic: str) -> BusSender:
    conf = cfg.ConfigOpts()
    conf([], default_config_files=[config_file])
    return BusSender(conf, rabbitmq_server.url, [topic])


def an_event(event_id: int, service_id: str) -> dict[str, Any]:
    event = Event(event_id, service_id, "compute-1", "nova-compute", "up", "down", "leave", NOW)
    return message(event, "servicegroup:test-leader")


NOW = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
SERVICE = "6f1c0f9e-8a55-4c38-9d63-0b7e2d0c1d2a"


def test_an_event_sent_again_as_after_a_lost_confirm_is_heard_once(
    rabbitmq_server: RabbitMQServer, config_file: str, topic: str, listener: Collector
) -> None:
    """The notifier resends an event whose confirm it never got: the listener drops it.

    Deterministic: event 2 heard means event 1 was acknowledged (one worker,
    in order), so the repeat of 1, sent after that, arrives after it; event 3
    heard means the repeat was received (the queue keeps the order) and dropped.
    """
    sender = bus_sender(rabbitmq_server, config_file, topic)
    try:
        first, second, third = (an_event(n, SERVICE) for n in (1, 2, 3))
        sender.send(first)
        sender.send(second)
        wait_for(lambda: listener.event_ids() == [1, 2], "events 1 and 2")
        sender.send(first)  # the same event, as the notifier sends it again
        sender.send(third)
        wait_for(lambda: 3 in listener.event_ids(), "event 3")
    finally:
        sender.close()
    assert listener.event_ids() == [1, 2, 3]


def test_control_two_different_events_are_both_heard_even_with_the_same_event_id(
    rabbitmq_server: RabbitMQServer, config_file: str, topic: str, listener: Collector
) -> None:
    """What the listener dropped above was the repeat, not a look-alike: event 1 of
    another deployment (another service uuid) is another event, and is heard."""
    sender = bus_sender(rabbitmq_server, config_file, topic)
    other_deployment = "0b7e2d0c-1d2a-4c38-9d63-6f1c0f9e8a55"
    try:
        sender.send(an_event(1, SERVICE))
        sender.send(an_event(2, SERVICE))
        wait_for(lambda: listener.event_ids() == [1, 2], "events 1 and 2")
        sender.send(an_event(1, other_deployment))
        sender.send(an_event(3, SERVICE))
        wait_for(lambda: 3 in listener.event_ids(), "event 3")
    finally:
        sender.close()
    assert listener.event_ids() == [1, 2, 1, 3]
    services = [note["payload"][DATA]["service_id"] for note in listener.heard]
    assert services == [SERVICE, SERVICE, other_deployment, SERVICE]


def test_a_leader_deposed_between_sends_and_cursor_write_its_successors_repeats_are_dropped(
    postgresql_db: str,
    make_group: Callable[..., ServiceGroup],
    rabbitmq_server: RabbitMQServer,
    config_file: str,
    topic: str,
    listener: Collector,
) -> None:
    """The worst case CURSOR_EVERY allows: CURSOR_EVERY events sent, none of them in the cursor.

    daemon-a stalls after its first send until its lease expired and daemon-b
    took it (a pause longer than the lease); it then sends on until its next
    cursor write, which the lease check refuses. daemon-b sends from the
    cursor: CURSOR_EVERY events again, then the rest. Each is heard once.
    """
    empty_tables(postgresql_db)
    group = make_group(postgresql_db, config_file=config_file)
    epoch = lease.acquire(group.engine, lease.SWEEPER, "daemon-a", None, 1.0)
    hold_a = lease.Hold(lease.SWEEPER, "daemon-a", epoch, 1.0)
    taken_over: list[lease.Hold] = []

    def take_over() -> bool:
        epoch = lease.acquire(group.engine, lease.SWEEPER, "daemon-b", None, 60.0)
        if epoch:
            taken_over.append(lease.Hold(lease.SWEEPER, "daemon-b", epoch, 60.0))
        return bool(epoch)

    class StallsAfterItsFirstSend(BusSender):
        def send(self, message: dict[str, Any]) -> None:
            super().send(message)
            if not taken_over:
                wait_for(take_over, "daemon-a's lease to expire and daemon-b to take it")

    old_sender = StallsAfterItsFirstSend(group.conf, rabbitmq_server.url, [topic])
    old = Notifier(group.engine, old_sender, 1.0, 0.05, 0.5, "servicegroup:test-leader")
    new = Notifier(
        group.engine,
        BusSender(group.conf, rabbitmq_server.url, [topic]),
        1.0,
        0.05,
        0.5,
        "servicegroup:test-leader",
    )
    try:
        old.send_pending(hold_a)  # seeds the cursor at the stream's end
        start = cursor(group) or 0
        for n in range(3 * CURSOR_EVERY):
            group.register(f"compute-{n}", "nova-compute")
        expected = stream_ids(group, start)
        assert old.send_pending(hold_a) == CURSOR_EVERY
        assert cursor(group) == start  # none of them in the cursor
        wait_for(lambda: len(listener.event_ids()) == CURSOR_EVERY, "daemon-a's sends")
        assert new.send_pending(taken_over[0]) == len(expected)  # the first CURSOR_EVERY again
        wait_for(lambda: expected[-1] in listener.event_ids(), "daemon-b's sends")
    finally:
        old.stop()
        new.stop()
    heard = listener.event_ids()
    assert heard == expected, f"heard {heard}, the stream has {expected}"
    assert old.stats.sent + new.stats.sent == len(expected) + CURSOR_EVERY
