"""The event stream on real databases: admin events, sweeps, cursors, lease, CAS.

Sweeps are driven by hand (Sweeper.sweep()) wherever the test is about what
a sweep writes, so no test depends on a background thread's timing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from servicegroup import ServiceGroup
from servicegroup.clock import Clock
from servicegroup.db import event_log
from servicegroup.db.models import leases, services
from servicegroup.exceptions import InvalidInput
from servicegroup.leader import lease
from servicegroup.leader import sweeper as sweeper_module
from servicegroup.leader.decision import decide
from servicegroup.leader.sweeper import Sweeper, next_sweep, write_transitions
from servicegroup.service import Snapshot
from tests.functional.test_conformance import Backend, backend  # noqa: F401 - fixture
from tests.helpers import wait_for

EVENT_OPTS = {"events__sweep_interval": 0.05}


def story(sg: ServiceGroup, since: int = 0) -> list[tuple[str | None, str, str]]:
    return [(e.previous, e.state, e.cause) for e in sg.events(since=since).events]


def sweep_until(sweeper: Sweeper, sg: ServiceGroup, want: tuple, since: int = 0) -> None:
    def seen() -> bool:
        sweeper.sweep()
        return want in story(sg, since)

    wait_for(seen, f"event {want}")


@pytest.fixture
def group(sql_url: str, make_group) -> ServiceGroup:
    return make_group(sql_url, **EVENT_OPTS)


def test_admin_actions_are_events_at_once(group: ServiceGroup) -> None:
    svc = group.register("host-1", "compute")
    group.register("host-1", "compute", version=2)  # not new: no event
    group.set_disabled(svc, True, "maintenance")
    group.set_disabled(svc, True, "still")  # no change of the flag: no event
    group.set_forced_down(svc, True)
    group.set_forced_down(svc, False)
    group.update(svc, disabled=False, version=3)
    group.delete(svc)
    assert story(group) == [
        (None, "down", "registered"),
        ("down", "down", "disabled"),
        ("down", "down", "forced_down"),
        ("down", "down", "forced_down_unset"),
        ("down", "down", "enabled"),
        ("down", "down", "deleted"),
    ]
    batch = group.events()
    assert [e.id for e in batch.events] == sorted(e.id for e in batch.events)
    assert {e.service_id for e in batch.events} == {svc.uuid}
    assert batch.events[0].as_dict()["time"].endswith("Z")


def test_sweep_records_down_and_up(group: ServiceGroup) -> None:
    sweeper = Sweeper(group, group.conf)
    svc = group.register("host-1", "compute")
    group.heartbeat(svc)
    sweep_until(sweeper, group, ("down", "up", "heartbeat"))
    sweep_until(sweeper, group, ("up", "down", "heartbeat_timeout"))
    reporter = group.join(svc)
    wait_for(lambda: group.is_up(svc), "the service up again")
    start = group.events().cursor
    sweep_until(sweeper, group, ("down", "up", "heartbeat"), since=start)
    reporter.stop()
    group.leave(svc)
    sweep_until(sweeper, group, ("up", "down", "leave"), since=start)
    counts = Counter((p, s) for p, s, _ in story(group))
    assert counts[("down", "up")] == 2 and counts[("up", "down")] == 2
    assert sweeper.stats.leader and sweeper.stats.transitions[("compute", "up")] == 2
    sweeper.hooks.close()


def test_sweeper_knows_when_the_next_death_is_due(sql_url: str, make_group) -> None:
    """A sweep that sees a service up computes when it expires; a sweep then finds it down.

    This is what lets the sweeper's thread wake at the expiry rather than a
    whole sweep_interval later (next_sweep()).
    """
    group = make_group(sql_url, service_down_time=0.4, events__sweep_interval=30.0)
    sweeper = Sweeper(group, group.conf)
    svc = group.register("host-1", "compute")
    group.heartbeat(svc)
    before = time.monotonic()
    assert ("down", "up", "heartbeat") in [t[:3] for t in _sweep_story(sweeper, group)]
    assert sweeper.expires_at is not None
    assert sweeper.expires_at <= before + group.down_time + 0.05  # its beat came before
    time.sleep(max(0.0, next_sweep(before, 30.0, sweeper.expires_at) - time.monotonic()))
    mark = group.events().cursor
    sweeper.sweep()
    assert story(group, mark) == [("up", "down", "heartbeat_timeout")]
    assert sweeper.expires_at is None  # nobody up: nothing to wait for
    sweeper.hooks.close()


def test_a_sweep_in_slices_sees_every_service(sql_url: str, make_group) -> None:
    """Read two at a time, five services give the events a one-slice read gives."""
    group = make_group(sql_url, service_down_time=2.0, events__sweep_slice=2, **EVENT_OPTS)
    sweeper = Sweeper(group, group.conf)
    fleet = [group.register(f"host-{i}", "compute") for i in range(5)]
    for service in fleet[1:]:
        group.heartbeat(service)
    before = time.monotonic()
    sweeper.sweep()
    ups = [e for e in group.events().events if e.state == "up"]
    assert sorted(e.service_id for e in ups) == sorted(s.uuid for s in fleet[1:])
    # The first death due is known whichever slice its service was read in.
    assert sweeper.expires_at is not None
    assert before < sweeper.expires_at <= before + group.down_time + 0.05
    mark = group.events().cursor
    group.leave(fleet[4])  # its event is written at once (records.record_leave)...
    left = [(fleet[4].uuid, "leave")]
    assert [(e.service_id, e.cause) for e in group.events(since=mark).events] == left
    sweeper.sweep()  # ...and a sweep finds it down as observed: nothing more
    assert [(e.service_id, e.cause) for e in group.events(since=mark).events] == left
    sweeper.hooks.close()


def _sweep_story(sweeper: Sweeper, sg: ServiceGroup) -> list[tuple[str | None, str, str]]:
    sweeper.sweep()
    return story(sg)


def test_forced_down_then_unset_while_beating(group: ServiceGroup) -> None:
    sweeper = Sweeper(group, group.conf)
    svc = group.register("host-1", "compute")
    group.join(svc)
    sweep_until(sweeper, group, ("down", "up", "heartbeat"))
    group.set_forced_down(svc, True)
    mark = group.events().cursor
    assert story(group, mark - 1) == [("up", "down", "forced_down")]
    sweeper.sweep()  # sees down, but SQL already says down: nothing new
    assert story(group, mark) == []
    group.set_forced_down(svc, False)
    sweep_until(sweeper, group, ("down", "up", "heartbeat"), since=mark)
    assert story(group, mark) == [
        ("down", "down", "forced_down_unset"),
        ("down", "up", "heartbeat"),
    ]
    sweeper.hooks.close()


def test_cursor_semantics(group: ServiceGroup) -> None:
    assert group.events().cursor == 0
    a = group.register("host-a", "compute")
    b = group.register("host-b", "scheduler")
    group.set_disabled(a, True)
    everything = group.events()
    ids = [e.id for e in everything.events]
    assert everything.cursor == ids[-1] and len(ids) == 3
    assert [e.id for e in group.events(since=ids[0]).events] == ids[1:]
    empty = group.events(since=ids[-1])
    assert empty.events == [] and empty.cursor == ids[-1]
    assert [e.service_id for e in group.events(binary="scheduler").events] == [b.uuid]
    assert [e.cause for e in group.events(host="host-a").events] == ["registered", "disabled"]
    assert group.events(since=ids[-1], host="host-b").cursor == ids[-1]
    assert [e.id for e in group.events(limit=2).events] == ids[:2]
    for bad in ({"wait": 61}, {"wait": -1}, {"since": -1}, {"limit": 0}):
        with pytest.raises(InvalidInput) as info:
            group.events(**bad)
        assert info.value.field == next(iter(bad))


def test_wait_returns_early_when_an_event_arrives(group: ServiceGroup) -> None:
    cursor = group.events().cursor
    timer = threading.Timer(0.2, group.register, ("host-late", "compute"))
    timer.start()
    batch = group.events(since=cursor, wait=30)  # a hang here fails on the pytest timeout
    timer.join()
    assert [e.host for e in batch.events] == ["host-late"]
    empty = group.events(since=batch.cursor, wait=0.1)
    assert empty.events == [] and empty.cursor == batch.cursor


def test_pruning_drops_old_events(sql_url: str, make_group) -> None:
    group = make_group(sql_url, events__retention=1.0, **EVENT_OPTS)
    group.register("host-1", "compute")
    assert event_log.prune(group.engine, 1.0) == 0
    wait_for(lambda: event_log.prune(group.engine, 1.0) == 1, "the event to age")
    # Ids keep increasing after the newest events were pruned.
    group.register("host-2", "compute")
    assert group.events().events[0].id == 2


# -- the lease -------------------------------------------------------------------


def test_lease_expiry_takeover_and_fencing(group: ServiceGroup) -> None:
    engine = group.engine
    assert lease.acquire(engine, "t", "a", None, 0.3) == 1
    assert lease.acquire(engine, "t", "b", None, 0.3) == 0  # held by a
    assert lease.acquire(engine, "t", "a", 1, 0.3) == 1  # renewed
    wait_for(lambda: lease.acquire(engine, "t", "b", None, 30) == 2, "b to take over")
    assert lease.holder_of(engine, "t") == ("b", 2)
    assert lease.acquire(engine, "t", "a", 1, 0.3) == 0  # a was deposed
    with engine.begin() as conn:
        assert not lease.Hold("t", "a", 1, 0.3).confirm(conn)
        assert lease.Hold("t", "b", 2, 30).confirm(conn)


def test_deposed_leader_writes_nothing_and_cas_never_duplicates(group: ServiceGroup) -> None:
    svc = group.register("host-1", "compute")
    old = Sweeper(group, group.conf, holder="old")
    old.lease = 0.2
    new = Sweeper(group, group.conf, holder="new")
    # The new leader must still lead at the end: its default lease (3 sweep
    # intervals, 0.15 s here) lapsed before the last write on a loaded machine.
    new.lease = 30.0
    assert old.sweep() == [] and old.stats.leader
    group.heartbeat(svc)
    # The old leader decides a transition, then stalls past its lease.
    transitions, _, _ = decide(group.snapshot().statuses, {})
    assert [(t.previous, t.state) for t in transitions] == [("down", "up")]
    wait_for(lambda: bool(new.sweep()) or new.stats.leader, "the new leader")
    before = story(group)
    assert (
        write_transitions(
            group.engine, transitions, lease.Hold(lease.SWEEPER, "old", old.stats.epoch, 0.2)
        )
        is None
    )
    assert story(group) == before
    # The same transition written twice by the leader: the CAS lets one through.
    hold = lease.Hold(lease.SWEEPER, "new", new.stats.epoch, 1.0)
    again = write_transitions(group.engine, transitions, hold)
    assert again == []
    assert Counter(story(group))[("down", "up", "heartbeat")] == 1
    old.hooks.close()
    new.hooks.close()


class SteppedClock(Clock):
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.at = 1000.0

    def monotonic(self) -> float:
        return self.at


def age_the_lease(group: ServiceGroup, seconds: float) -> None:
    """Bring the lease's expiry `seconds` nearer, as if that much time had passed."""
    with group.engine.begin() as conn:
        row = leases.c.name == lease.SWEEPER
        expires = conn.execute(sa.select(leases.c.expires_at).where(row)).scalar_one()
        conn.execute(
            sa.update(leases).where(row).values(expires_at=expires - timedelta(seconds=seconds))
        )


@pytest.fixture
def slow_read(sql_url: str, make_group) -> tuple[ServiceGroup, Sweeper, SteppedClock]:
    """Six up services read two at a time, each slice taking 0.6 s of a 1 s lease."""
    group = make_group(
        sql_url,
        service_down_time=30.0,
        events__sweep_slice=2,
        events__leader_lease=1.0,
        **EVENT_OPTS,
    )
    clock = SteppedClock()
    sweeper = Sweeper(group, group.conf, holder="reader", clock=clock)
    assert sweeper.lease == 1.0
    assert group.heartbeat_many([group.register(f"host-{i}", "compute") for i in range(6)]) == {}
    return group, sweeper, clock


def test_a_read_longer_than_the_lease_renews_it_between_slices(
    slow_read: tuple[ServiceGroup, Sweeper, SteppedClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full read of a big fleet outlasts the lease: nobody takes it meanwhile."""
    group, sweeper, clock = slow_read
    slices = group.slices
    thefts: list[int] = []

    def slow_slices(size: int) -> Iterator[Snapshot]:
        for snapshot in slices(size):
            clock.at += 0.6
            age_the_lease(group, 0.6)
            thefts.append(lease.acquire(group.engine, lease.SWEEPER, "thief", None, 1.0))
            yield snapshot

    monkeypatch.setattr(group, "slices", slow_slices)
    written = sweeper.sweep()  # 3 slices and more: 1.8 s of reading
    assert len(thefts) >= 3 and set(thefts) == {0}
    assert sorted(t.state for t in written) == ["up"] * 6
    assert sweeper.stats.leader
    sweeper.hooks.close()


def test_a_leader_keeps_its_lease_while_the_budget_spaces_its_sweeps_out(
    sql_url: str, make_group, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sweep_budget spaces costly sweeps out far past the lease: it is renewed meanwhile.

    Unrenewed, it lapsed at each long wait, and the leadership moved (or came
    back at a new epoch, to start again with a full read).
    """
    group = make_group(sql_url, service_down_time=30.0, events__leader_lease=1.5, **EVENT_OPTS)
    assert group.heartbeat_many([group.register("host-1", "compute")]) == {}
    # As after a sweep that cost much CPU: the next one is due in 60 s (next_sweep's budget).
    monkeypatch.setattr(sweeper_module, "next_sweep", lambda started, *_a, **_k: started + 60.0)
    sweeper = Sweeper(group, group.conf, holder="leader").start()
    try:
        wait_for(lambda: sweeper.stats.sweeps, "the first sweep")
        epoch = sweeper.stats.epoch
        thefts, watch_until = [], time.monotonic() + 4.0  # over two and a half leases
        while time.monotonic() < watch_until:
            thefts.append(lease.acquire(group.engine, lease.SWEEPER, "thief", None, 1.5))
            time.sleep(0.1)
        assert set(thefts) == {0}
        assert lease.holder_of(group.engine, lease.SWEEPER) == ("leader", epoch)
        assert (sweeper.stats.leader, sweeper.stats.epoch) == (True, epoch)
        assert sweeper.stats.sweeps == 1  # renewals are not sweeps
    finally:
        sweeper.stop()


def test_a_read_that_loses_the_lease_writes_nothing(
    slow_read: tuple[ServiceGroup, Sweeper, SteppedClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a renewal between slices finds another holder, the sweep stops there."""
    group, sweeper, clock = slow_read
    slices = group.slices

    def read_while_deposed(size: int) -> Iterator[Snapshot]:
        for number, snapshot in enumerate(slices(size)):
            clock.at += 0.6
            if number == 1:  # the sweeper stalled: its lease lapsed and was taken
                age_the_lease(group, 5.0)
                assert lease.acquire(group.engine, lease.SWEEPER, "thief", None, 30.0) == 2
            yield snapshot

    monkeypatch.setattr(group, "slices", read_while_deposed)
    before = story(group)
    assert sweeper.sweep() == []
    assert story(group) == before
    assert not sweeper.stats.leader
    assert lease.holder_of(group.engine, lease.SWEEPER) == ("thief", 2)
    sweeper.hooks.close()


def test_a_batch_of_transitions_is_compared_and_set_row_by_row(
    group: ServiceGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many transitions go in a few statements (chunks of 3 here), each still a CAS."""
    monkeypatch.setattr(event_log, "CAS_CHUNK", 3)
    sweeper = Sweeper(group, group.conf)
    assert sweeper.sweep() == [] and sweeper.stats.leader
    fleet = [group.register(f"host-{i}", "compute") for i in range(8)]
    for svc in fleet:
        group.heartbeat(svc)
    transitions, _, _ = decide(group.snapshot().statuses, {})
    assert len(transitions) == 8
    # Between the snapshot and the write, another writer moved two of them first.
    raced_ids = {fleet[1].uuid, fleet[6].uuid}
    raced = [t for t in transitions if t.status.service.uuid in raced_ids]
    # Renewed for long enough: registering the fleet may outlast the 0.15 s lease.
    epoch = lease.acquire(group.engine, lease.SWEEPER, sweeper.holder, sweeper.stats.epoch, 30)
    hold = lease.Hold(lease.SWEEPER, sweeper.holder, epoch, 30)
    assert len(write_transitions(group.engine, raced, hold) or []) == 2
    mark = group.events().cursor
    written = write_transitions(group.engine, transitions, hold)
    assert written is not None
    assert {t.status.service.uuid for t in written} == {s.uuid for s in fleet} - raced_ids
    assert story(group, mark) == [("down", "up", "heartbeat")] * 6
    observed = {s.service.uuid: s.service.observed_state for s in group.snapshot().statuses}
    assert set(observed.values()) == {"up"}
    sweeper.hooks.close()


def test_new_leader_resumes_from_observed_state(group: ServiceGroup) -> None:
    svc = group.register("host-1", "compute")
    group.heartbeat(svc)
    first = Sweeper(group, group.conf, holder="first")
    sweep_until(first, group, ("down", "up", "heartbeat"))
    # first dies; the service dies during the hand-over.
    with group.engine.begin() as conn:
        conn.execute(sa.text("UPDATE leases SET expires_at = :t"), {"t": "2000-01-01 00:00:00"})
    wait_for(lambda: not group.is_up(svc), "the service to go down")
    second = Sweeper(group, group.conf, holder="second")
    sweep_until(second, group, ("up", "down", "heartbeat_timeout"))
    assert first.sweep() == []  # deposed
    second.sweep()
    assert Counter(story(group)) == {
        (None, "down", "registered"): 1,
        ("down", "up", "heartbeat"): 1,
        ("up", "down", "heartbeat_timeout"): 1,
    }
    first.hooks.close()
    second.hooks.close()


def test_rows_from_before_events_are_seeded_silently(group: ServiceGroup) -> None:
    svc = group.register("host-1", "compute")
    with group.engine.begin() as conn:
        conn.execute(sa.update(services).values(observed_state=None))
    sweeper = Sweeper(group, group.conf)
    sweeper.sweep()
    assert group.get(svc).service.observed_state == "down"
    assert story(group) == [(None, "down", "registered")]
    sweeper.hooks.close()


def test_concurrent_appenders_commit_in_id_order(sql_url: str, make_group) -> None:
    """Writers race; a reader polling all along must never see a hole filled later.

    If ids could commit out of order, some poll would return ids above a gap
    that a later poll fills in: the reader's cursor would have skipped it.
    """
    writers = [make_group(sql_url, **EVENT_OPTS) for _ in range(4)]
    reader = make_group(sql_url, **EVENT_OPTS)
    per_writer = 15
    errors: list[BaseException] = []

    def write(sg: ServiceGroup, n: int) -> None:
        try:
            for i in range(per_writer):
                svc = sg.register(f"host-{n}-{i}", "compute")
                sg.set_disabled(svc, True)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(sg, n)) for n, sg in enumerate(writers)]
    for t in threads:
        t.start()
    cursor, seen = 0, []
    while any(t.is_alive() for t in threads) or len(seen) < 2 * per_writer * len(writers):
        batch = reader.events(since=cursor)
        ids = [e.id for e in batch.events]
        assert ids == list(range(cursor + 1, cursor + 1 + len(ids))), (cursor, ids)
        seen += ids
        cursor = batch.cursor
        if errors:
            break
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(seen) == 2 * per_writer * len(writers)
    # Every registration precedes that service's disabled event.
    order = {(e.service_id, e.cause): e.id for e in reader.events(limit=1000).events}
    assert all(order[u, "registered"] < order[u, "disabled"] for u, c in order if c == "disabled")


# -- other drivers ---------------------------------------------------------------


def test_sweep_on_every_backend(backend: Backend, request: pytest.FixtureRequest) -> None:  # noqa: F811
    sg = backend.group(**EVENT_OPTS)
    sweeper = Sweeper(sg, sg.conf)
    request.addfinalizer(sweeper.hooks.close)
    svc = sg.register("host-1", "compute")
    reporter = sg.join(svc)
    sweep_until(sweeper, sg, ("down", "up", "heartbeat"))
    reporter.stop()  # heartbeats stop; the record stays
    want = ("up", "down")

    def down_seen() -> bool:
        sweeper.sweep()
        return any((p, s) == want for p, s, _ in story(sg))

    wait_for(down_seen, "the down event")
    assert Counter((p, s) for p, s, _ in story(sg)) == {
        (None, "down"): 1,
        ("down", "up"): 1,
        ("up", "down"): 1,
    }


def test_between_full_sweeps_a_sweep_reads_only_what_can_have_changed(
    backend: Backend,  # noqa: F811 - the conformance fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """leader/schedule.py on every backend: due up services, the not up, and what events name."""
    sg = backend.group(
        service_down_time=30.0,
        report_interval=1.0,
        events__sweep_interval=0.05,
        events__full_sweep_interval=3600.0,
    )
    sweeper = Sweeper(sg, sg.conf)
    fleet = [sg.register(f"host-{i}", "compute") for i in range(20)]
    assert sg.heartbeat_many(fleet[:15]) == {}
    sweeper.sweep()  # the leadership's first sweep reads everything
    assert len([e for e in sg.events().events if e.state == "up"]) == 15

    reads: list[set[str]] = []
    full_reads: list[int] = []
    snapshot_of, slices = sg.snapshot_of, sg.slices

    def spy_snapshot_of(uuids):
        reads.append(set(uuids))
        return snapshot_of(uuids)

    def spy_slices(size):
        full_reads.append(size)
        return slices(size)

    monkeypatch.setattr(sg, "snapshot_of", spy_snapshot_of)
    monkeypatch.setattr(sg, "slices", spy_slices)
    newcomer = sg.register("host-new", "compute")
    sg.delete(fleet[0])
    sweeper.sweep()
    if not sg.beat_times:  # tooz: no heartbeat times, so every sweep reads all
        assert full_reads and not reads
        return
    not_up = {s.uuid for s in fleet[15:]}
    assert full_reads == []
    assert set().union(*reads) == not_up | {newcomer.uuid, fleet[0].uuid}
    reads.clear()
    sweeper.sweep()  # the deleted one is forgotten, the newcomer is watched (down)
    assert set().union(*reads) == not_up | {newcomer.uuid}
    reads.clear()
    sg.heartbeat(newcomer)
    sweeper.sweep()
    assert ("down", "up", "heartbeat") in [
        (e.previous, e.state, e.cause) for e in sg.events().events if e.host == "host-new"
    ]
    reads.clear()
    sweeper.sweep()  # up now, its expiry far off: no longer read
    assert set().union(*reads) == not_up
    sweeper.hooks.close()


def test_every_full_sweep_interval_a_sweep_reads_everything(
    sql_url: str, make_group, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net: whatever the schedule says, a full read comes every full_sweep_interval."""
    group = make_group(
        sql_url, service_down_time=30.0, events__full_sweep_interval=300.0, **EVENT_OPTS
    )
    clock = SteppedClock()
    sweeper = Sweeper(group, group.conf, clock=clock)
    assert group.heartbeat_many([group.register(f"host-{i}", "compute") for i in range(4)]) == {}
    full_reads: list[int] = []
    slices = group.slices

    def counted(size: int) -> Iterator[Snapshot]:
        full_reads.append(size)
        return slices(size)

    monkeypatch.setattr(group, "slices", counted)
    sweeper.sweep()  # a leadership starts with a full read
    assert len(full_reads) == 1
    for _ in range(3):
        clock.at += 99.0
        sweeper.sweep()
    assert len(full_reads) == 1  # 297 s: incremental sweeps only
    clock.at += 3.0
    sweeper.sweep()
    assert len(full_reads) == 2
    sweeper.hooks.close()


def test_each_binary_goes_down_by_its_own_down_time(
    backend: Backend,  # noqa: F811 - the conformance fixture
    request: pytest.FixtureRequest,
) -> None:
    """[binaries]: a quick binary's down event, and its claims' recovery, come by its own
    down time, while a patient binary's service stays up; the incremental sweep (no full
    read after the first) must schedule the quick one's expiry to see it at all."""
    sg = backend.group(
        service_down_time=30.0,
        binaries__service_down_time={"quick": "0.3"},
        events__sweep_interval=0.05,
        events__full_sweep_interval=3600.0,
        claims__grace=0.0,
    )
    sweeper = Sweeper(sg, sg.conf)
    request.addfinalizer(sweeper.stop)
    quick = sg.register("host-1", "quick")
    patient = sg.register("host-1", "patient")
    sg.claim(quick, "task", "q", "working")
    sg.claim(patient, "task", "p", "working")
    assert sg.heartbeat_many([patient]) == {}
    reporter = sg.join(quick)  # beats until a sweep has seen it up: 0.3 s is short

    def both_up() -> bool:
        sweeper.sweep()  # the first is the leadership's full read; then incremental ones
        ups = {e.binary for e in sg.events().events if e.state == "up"}
        return ups == {"quick", "patient"}

    wait_for(both_up, "both services' up events")
    reporter.stop()  # its beats stop; the record stays

    def down_seen() -> bool:  # tooz's cause is "leave": the backend expired the member
        sweeper.sweep()
        return any((p, s) == ("up", "down") for p, s, _ in story(sg))

    wait_for(down_seen, "the quick service's down event")

    def released() -> bool:
        sweeper.sweep()
        return sg.get_claim("task", "q").state != "held"

    wait_for(released, "the quick service's claim to be recovered")
    downs = [e for e in sg.events().events if e.state == "down" and e.previous == "up"]
    assert [e.binary for e in downs] == ["quick"]
    assert sg.get_claim("task", "p").state == "held"
    assert sg.is_up(patient)  # 30 s to spare
