"""leader/schedule.py: which services an incremental sweep reads, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from servicegroup.leader.schedule import ReadSchedule
from servicegroup.service import ServiceStatus, Snapshot, State
from tests.helpers import make_service

READ_AT = datetime(2026, 1, 1, tzinfo=UTC)  # the backend's clock at the read
DOWN_TIME = 60.0


def st(uuid: str, state: State, age: float | None, binary: str = "b") -> ServiceStatus:
    beat = None if age is None else READ_AT - timedelta(seconds=age)
    return ServiceStatus(make_service(uuid=uuid, binary=binary), state, beat)


def snap(*statuses: ServiceStatus, read_at: datetime | None = READ_AT) -> Snapshot:
    return Snapshot(list(statuses), liveness_ok=True, read_at=read_at)


def test_up_services_are_due_at_their_expiry_and_the_others_every_sweep() -> None:
    schedule = ReadSchedule(DOWN_TIME)
    schedule.learn(
        snap(
            st("fresh", State.UP, age=0.0),
            st("old", State.UP, age=50.0),
            st("down", State.DOWN, age=70.0),
            st("never", State.DOWN, age=None),
            st("unknown", State.UNKNOWN, age=None),
        ),
        read_started=1000.0,
    )
    not_up = {"down", "never", "unknown"}
    assert schedule.due(1000.0) == not_up
    # A sweep reads what is due, and learns it again: still not up.
    schedule.learn(snap(st("down", State.DOWN, 70.0), st("never", State.DOWN, None)), 1000.0)
    schedule.learn(snap(st("unknown", State.UNKNOWN, None)), 1000.0)
    assert schedule.next_expiry() == 1010.0  # "old": 60 s after its beat, 10 s from now
    assert schedule.due(1010.0) == {"old"} | not_up
    schedule.watch(not_up)  # (as if their read failed: read them next sweep)
    assert schedule.due(1010.0) == not_up  # "old" was taken once
    assert schedule.next_expiry() == 1060.0
    assert schedule.due(1060.0) >= {"fresh"}
    assert schedule.next_expiry() is None


def test_a_re_read_replaces_the_old_expiry() -> None:
    schedule = ReadSchedule(DOWN_TIME)
    schedule.learn(snap(st("s", State.UP, age=0.0)), read_started=1000.0)
    # Read again 30 s later (an event named it): it beat 5 s before that read.
    later = READ_AT + timedelta(seconds=30)
    beat = later - timedelta(seconds=5)
    schedule.learn(
        Snapshot([ServiceStatus(make_service(uuid="s"), State.UP, beat)], True, later),
        read_started=1030.0,
    )
    assert schedule.due(1060.0) == set()  # the first expiry is stale
    assert schedule.next_expiry() == 1085.0
    assert schedule.due(1085.0) == {"s"}


def test_a_service_that_goes_down_is_watched_and_one_that_comes_up_is_not() -> None:
    schedule = ReadSchedule(DOWN_TIME)
    schedule.learn(snap(st("s", State.UP, age=0.0)), read_started=1000.0)
    schedule.learn(snap(st("s", State.DOWN, age=61.0)), read_started=1061.0)
    assert schedule.due(1061.0) == {"s"}
    assert schedule.next_expiry() is None
    schedule.learn(snap(st("s", State.UP, age=1.0)), read_started=1070.0)
    assert schedule.due(1070.0) == set()


def test_a_read_without_a_backend_time_reads_again_next_sweep() -> None:
    schedule = ReadSchedule(DOWN_TIME)
    schedule.learn(snap(st("s", State.UP, age=0.0), read_at=None), read_started=1000.0)
    assert schedule.due(1000.0) == {"s"}


def test_watch_and_forget() -> None:
    schedule = ReadSchedule(DOWN_TIME)
    schedule.learn(snap(st("a", State.UP, age=0.0), st("b", State.UP, age=0.0)), 1000.0)
    schedule.watch(["a"])  # its read failed: read it every sweep again
    assert schedule.due(1000.0) == {"a"}
    schedule.forget(["a", "b"])  # deleted
    assert schedule.due(2000.0) == set() and len(schedule) == 0


def test_sizes_count_each_service_once_by_its_binary() -> None:
    schedule = ReadSchedule(DOWN_TIME)
    schedule.learn(snap(st("a", State.UP, 0.0, "x"), st("b", State.DOWN, None, "x")), 1000.0)
    schedule.learn(snap(st("a", State.UP, 0.0, "x"), st("c", State.UP, 0.0, "y")), 1001.0)
    assert schedule.sizes == {"x": 2, "y": 1}
    schedule.forget(["b", "c"])
    assert schedule.sizes == {"x": 1}


def test_the_heap_of_stale_expiries_stays_bounded() -> None:
    schedule = ReadSchedule(DOWN_TIME)
    for i in range(5000):  # one service re-read 5,000 times, each with a new beat
        schedule.learn(snap(st("s", State.UP, age=-i * 0.001)), read_started=1000.0)
    assert len(schedule._heap) <= 2 * 1 + 1024 + 1
    assert schedule.next_expiry() == 1000.0 + 4.999 + DOWN_TIME


def test_more_services_not_up_than_a_sweep_reads_are_read_in_turns() -> None:
    schedule = ReadSchedule(DOWN_TIME)
    schedule.learn(snap(*(st(f"s{i}", State.DOWN, None) for i in range(10))), 1000.0)
    first = schedule.due(1000.0, watch_limit=4)
    assert first == {"s0", "s1", "s2", "s3"}  # the longest unread first
    schedule.learn(snap(*(st(u, State.DOWN, None) for u in sorted(first))), 1001.0)  # still down
    second = schedule.due(1001.0, watch_limit=4)
    assert second == {"s4", "s5", "s6", "s7"}
    schedule.learn(snap(st("s4", State.UP, 0.0)), 1002.0)  # s4 came up; the rest of the turn...
    schedule.watch(["s5", "s6", "s7"])  # ...was not read (a failed read): watched again
    third = schedule.due(1002.0, watch_limit=4)
    assert third == {"s8", "s9", "s0", "s1"}
    assert schedule.due(1003.0) == {"s2", "s3", "s5", "s6", "s7"}  # no limit: all watched
    assert schedule.due(1004.0) == set()  # nobody put back by a read


def test_a_binary_with_its_own_down_time_expires_by_it() -> None:
    schedule = ReadSchedule(DOWN_TIME, {"quick": 5.0, "slow": 600.0})
    schedule.learn(
        snap(
            st("q", State.UP, age=1.0, binary="quick"),
            st("s", State.UP, age=1.0, binary="slow"),
            st("d", State.UP, age=1.0, binary="default"),
        ),
        read_started=1000.0,
    )
    assert schedule.next_expiry() == 1004.0
    assert schedule.due(1004.0) == {"q"}
    assert schedule.next_expiry() == 1059.0
    assert schedule.due(1059.0) == {"d"}
    assert schedule.next_expiry() == 1599.0
