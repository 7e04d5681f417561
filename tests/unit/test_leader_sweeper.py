"""leader/sweeper.py's pure parts: when the sweeper wakes, and when an up service expires."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from servicegroup.leader.decision import Transition
from servicegroup.leader.sweeper import LOG_EACH, log_transitions, next_sweep, seconds_to_expiry
from servicegroup.service import ServiceStatus, Snapshot, State
from tests.helpers import make_service


@pytest.mark.parametrize(
    ("expires_at", "wake"),
    [
        (None, 101.0),  # nothing to expire: one interval
        (105.0, 101.0),  # expires after the next sweep anyway
        (100.5, 100.51),  # expires sooner: just after it is due
        (100.1, 100.25),  # but never sooner than a quarter interval
        (99.0, 100.25),  # an expiry already past (an early guess): the floor
    ],
)
def test_next_sweep(expires_at: float | None, wake: float) -> None:
    assert next_sweep(100.0, 1.0, expires_at) == pytest.approx(wake)


@pytest.mark.parametrize(
    ("took", "expires_at", "wake"),
    [
        (0.01, None, 101.0),  # within budget: the interval
        (0.2, None, 104.0),  # 0.2 s at a 5% budget: every 4 s
        (2.0, None, 130.0),  # but never past down_time / 2
        (0.2, 102.0, 102.01),  # a death due sooner still wakes it
    ],
)
def test_long_sweeps_are_spaced_out_within_the_budget(
    took: float, expires_at: float | None, wake: float
) -> None:
    got = next_sweep(100.0, 1.0, expires_at, took=took, budget=0.05, down_time=60.0)
    assert got == pytest.approx(wake)


def test_seconds_to_expiry_is_the_first_up_heartbeat_plus_the_down_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def status(state: State, seconds_ago: float | None) -> ServiceStatus:
        beat = None if seconds_ago is None else now - timedelta(seconds=seconds_ago)
        return ServiceStatus(make_service(), state, beat)

    statuses = [
        status(State.UP, 3.0),
        status(State.UP, 1.0),
        status(State.DOWN, 30.0),  # already down: no expiry to wait for
        status(State.UNKNOWN, 9.5),
    ]
    assert seconds_to_expiry(Snapshot(statuses, True, read_at=now), 10.0) == 7.0
    assert seconds_to_expiry(Snapshot(statuses[2:], True, read_at=now), 10.0) is None
    assert seconds_to_expiry(Snapshot(statuses, False, read_at=None), 10.0) is None


def test_seconds_to_expiry_uses_each_binary_own_down_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    quick = ServiceStatus(make_service(binary="quick"), State.UP, now - timedelta(seconds=3))
    slow = ServiceStatus(make_service(binary="slow"), State.UP, now - timedelta(seconds=1))
    snapshot = Snapshot([quick, slow], True, read_at=now)
    assert seconds_to_expiry(snapshot, 10.0) == 7.0
    assert seconds_to_expiry(snapshot, 10.0, {"quick": 100.0}) == 9.0
    assert seconds_to_expiry(snapshot, 10.0, {"quick": 4.0}) == 1.0


def _up(host: str, binary: str = "nova-compute") -> Transition:
    service = make_service(host=host, binary=binary)
    return Transition(ServiceStatus(service, State.UP, None), "down", "up", "heartbeat")


def test_a_few_transitions_are_logged_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="servicegroup.leader.sweeper")
    log_transitions([_up("compute-1"), _up("sched-1", "nova-scheduler")])
    assert caplog.messages == [
        "nova-compute on compute-1: down -> up (heartbeat)",
        "nova-scheduler on sched-1: down -> up (heartbeat)",
    ]


def test_many_transitions_are_logged_as_counts_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="servicegroup.leader.sweeper")
    many = [_up(f"compute-{i}") for i in range(LOG_EACH)] + [_up("sched-1", "nova-scheduler")]
    log_transitions(many)
    assert caplog.messages == [
        f"{LOG_EACH} nova-compute services: down -> up (heartbeat)",
        "1 nova-scheduler services: down -> up (heartbeat)",
    ]
