"""The reporter: one warning per outage, one info on recovery, and it never dies."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from servicegroup.exceptions import BackendError
from servicegroup.reporter import Reporter
from servicegroup.service import Service
from tests.helpers import ManualClock, make_service, wait_for

LOGGER = "servicegroup.reporter"

SERVICE = make_service(uuid="0b7e6a4e-1d5f-4c1e-bc1d-1c5f0f3c9a01", version=1)


class FlakyBeat:
    """A beat that raises `errors` (one per call, in order) and then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.ok = 0
        self.lock = threading.Lock()

    def __call__(self, service: Service) -> None:
        assert service is SERVICE
        with self.lock:
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)
            self.ok += 1


def outage(n: int) -> list[Exception]:
    return [BackendError("ZooKeeper", "connection refused") for _ in range(n)]


def messages(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_one_warning_per_outage_and_one_recovery_line(caplog, clock: ManualClock) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    beat = FlakyBeat(*outage(5))
    reporter = Reporter(SERVICE, beat, 2.0, "ZooKeeper", clock)

    results = []
    for _ in range(6):
        results.append(reporter.beat_once())
        clock.t += 1.5
    assert results == [False] * 5 + [True]

    warnings = messages(caplog, logging.WARNING)
    infos = messages(caplog, logging.INFO)
    assert len(warnings) == 1
    assert "lost connection to ZooKeeper" in warnings[0]
    assert "nova-compute on compute-1" in warnings[0]
    assert "connection refused" in warnings[0]
    assert len(infos) == 1
    assert "recovered" in infos[0]
    # The outage is measured on the injected clock: first failure to recovery.
    assert "after 5 failed heartbeats (7.5s)" in infos[0]
    # The failures in between go to debug, where they cost an operator nothing.
    assert len(messages(caplog, logging.DEBUG)) == 4

    assert (reporter.beats, reporter.total_failures, reporter.consecutive_failures) == (1, 5, 0)
    assert reporter.healthy

    # Steady beating logs nothing more.
    caplog.clear()
    for _ in range(3):
        assert reporter.beat_once()
    assert caplog.records == []


def test_each_outage_is_reported_once(caplog, clock: ManualClock) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    beat = FlakyBeat()
    reporter = Reporter(SERVICE, beat, 1.0, "memcached", clock)
    for _ in range(2):
        beat.errors.extend(outage(3))
        for _ in range(4):
            reporter.beat_once()
    assert len([m for m in messages(caplog, logging.WARNING) if "lost connection" in m]) == 2
    assert len([m for m in messages(caplog, logging.INFO) if "recovered" in m]) == 2
    assert reporter.total_failures == 6


def test_expected_outage_has_no_traceback_but_a_bug_has(caplog, clock: ManualClock) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    reporter = Reporter(SERVICE, FlakyBeat(*outage(1)), 1.0, "database", clock)
    reporter.beat_once()
    reporter.beat_once()
    reporter = Reporter(SERVICE, FlakyBeat(ZeroDivisionError("boom")), 1.0, "database", clock)
    reporter.beat_once()
    backend, bug = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert not backend.exc_info
    assert bug.exc_info and bug.exc_info[0] is ZeroDivisionError


def test_unexpected_exception_does_not_stop_beating(caplog, clock: ManualClock) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    beat = FlakyBeat(ZeroDivisionError("division by zero"), KeyError("x"), RuntimeError("?"))
    reporter = Reporter(SERVICE, beat, 1.0, "database", clock)
    assert [reporter.beat_once() for _ in range(5)] == [False, False, False, True, True]
    assert beat.ok == 2
    assert len(messages(caplog, logging.WARNING)) == 1
    assert len(messages(caplog, logging.INFO)) == 1


def test_thread_survives_errors_keeps_beating_and_stops(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    beat = FlakyBeat(ZeroDivisionError("boom"), *outage(3))
    reporter = Reporter(SERVICE, beat, 0.01, "database").start()
    try:
        wait_for(lambda: beat.ok >= 5)
        assert reporter.alive
    finally:
        reporter.stop(timeout=10)
    assert not reporter.alive
    assert len([m for m in messages(caplog, logging.WARNING) if "lost connection" in m]) == 1
    assert len([m for m in messages(caplog, logging.INFO) if "recovered" in m]) == 1
    calls = beat.calls
    time.sleep(0.05)
    assert beat.calls == calls  # stopped means no more beats


def test_stop_interrupts_a_long_interval() -> None:
    # With an hour between beats, only an interruptible wait lets stop() return.
    beat = FlakyBeat()
    reporter = Reporter(SERVICE, beat, 3600.0, "database").start()
    wait_for(lambda: beat.ok == 1)  # the first beat happens at once, not after an interval
    reporter.stop(timeout=10)
    assert not reporter.alive
    assert beat.calls == 1


def test_context_manager_stops() -> None:
    beat = FlakyBeat()
    with Reporter(SERVICE, beat, 3600.0, "database").start() as reporter:
        wait_for(lambda: beat.ok == 1)
    assert not reporter.alive
