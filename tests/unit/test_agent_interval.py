"""agent.py: how often the agent beats, chosen from --interval and its binary's times.

The loop runs against a fake transport; its waits are recorded instead of
slept, and move a manual clock by as much, as a sleep would.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from servicegroup.agent import Agent, Outcome, choose_interval
from servicegroup.binary_times import Times
from servicegroup.exceptions import BackendError
from servicegroup.service import Service
from tests.helpers import ManualClock, make_service

FAST = Times("fast-worker", report_interval=2.0, service_down_time=6.0)
DEFAULT = 10.0


def test_without_interval_the_binarys_report_interval_is_used() -> None:
    chosen = choose_interval(None, FAST, DEFAULT)
    assert (chosen.seconds, chosen.warning, chosen.fallback) == (2.0, None, False)
    assert "'fast-worker'" in chosen.source


def test_without_interval_nor_times_the_default_is_used_and_said() -> None:
    chosen = choose_interval(None, None, DEFAULT)
    assert (chosen.seconds, chosen.warning, chosen.fallback) == (DEFAULT, None, True)


@pytest.mark.parametrize("explicit", [0.5, 2.0, 2.9])
def test_an_explicit_interval_wins_silently_when_fast_enough(explicit: float) -> None:
    chosen = choose_interval(explicit, FAST, DEFAULT)
    assert (chosen.seconds, chosen.source, chosen.warning) == (explicit, "--interval", None)


@pytest.mark.parametrize("explicit", [3.0, 10.0])
def test_an_explicit_interval_too_slow_for_the_down_time_wins_with_a_warning(
    explicit: float,
) -> None:
    # binary_times' rule: the down time must be greater than 2 x the interval.
    chosen = choose_interval(explicit, FAST, DEFAULT)
    assert chosen.seconds == explicit
    assert chosen.warning is not None
    assert f"--interval {explicit:g}s is too slow for binary 'fast-worker'" in chosen.warning
    assert "service_down_time (6s)" in chosen.warning


def test_an_explicit_interval_without_times_is_not_a_fallback() -> None:
    chosen = choose_interval(30.0, None, DEFAULT)
    assert (chosen.seconds, chosen.warning, chosen.fallback) == (30.0, None, False)


class FakeTransport:
    """Registers at once (after `outages` failed attempts) and tells `times`."""

    backend = "the fake daemon"

    def __init__(self, times: Times | None, outages: int = 0) -> None:
        self.answer = times
        self.outages = outages
        self.beats = 0
        self.registrations = 0

    def register(self, **identity: Any) -> Service:
        if self.outages:
            self.outages -= 1
            raise BackendError(self.backend, "connection refused")
        self.registrations += 1
        return make_service(host=identity["host"], binary=identity["binary"])

    def times(self, binary: str) -> Times | None:
        assert binary == "fast-worker"
        return self.answer

    def heartbeat(self, service: Service) -> None:
        self.beats += 1

    def leave(self, service: Service) -> None:
        pass

    def close(self) -> None:
        pass


class RecordedWaits(threading.Event):
    """The loop's stop event: records each wait and moves the clock by it instead of
    sleeping; set after `ticks` waits."""

    def __init__(self, ticks: int, clock: ManualClock | None = None) -> None:
        super().__init__()
        self.ticks = ticks
        self.clock = clock or ManualClock()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.clock.advance(timeout)
        if len(self.waits) >= self.ticks:
            self.set()
        return self.is_set()


def run(transport: FakeTransport, interval: float | None, ticks: int = 4) -> RecordedWaits:
    identity = {"host": "h1", "binary": "fast-worker"}
    clock = ManualClock()
    agent = Agent(
        transport,
        identity,
        lambda: Outcome(True, "ok"),
        interval,
        clock=clock,
        default_interval=DEFAULT,
    )
    agent.stop = waits = RecordedWaits(ticks, clock)
    assert agent.run() == 0
    return waits


def test_the_loop_beats_at_the_binarys_interval() -> None:
    transport = FakeTransport(FAST)
    waits = run(transport, None)
    assert waits.waits == [2.0] * 4  # a beat, then a wait of one interval, four times
    assert transport.beats == 4


def test_registration_retries_at_the_default_then_beats_at_the_binarys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = FakeTransport(FAST, outages=2)
    with caplog.at_level(logging.INFO, logger="servicegroup.agent"):
        waits = run(transport, None, ticks=5)
    assert waits.waits == [DEFAULT, DEFAULT, 2.0, 2.0, 2.0]
    assert "checking every 2s (the report_interval of binary 'fast-worker')" in caplog.text


def test_an_older_daemon_means_the_default_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = FakeTransport(None)
    with caplog.at_level(logging.INFO, logger="servicegroup.agent"):
        waits = run(transport, None)
    assert set(waits.waits) == {DEFAULT}
    assert caplog.text.count("does not tell binaries' times") == 1


def test_a_too_slow_explicit_interval_is_used_and_warned_once_across_registrations(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = FakeTransport(FAST)
    agent = Agent(
        transport,
        {"host": "h1", "binary": "fast-worker"},
        lambda: Outcome(True, "ok"),
        5.0,
        clock=ManualClock(),
        default_interval=DEFAULT,
    )
    with caplog.at_level(logging.WARNING, logger="servicegroup.agent"):
        # Two registrations, as after a daemon that lost the record: one warning.
        for _ in range(2):
            agent.stop = RecordedWaits(1)
            assert agent._register() is not None
    assert agent.interval == 5.0
    assert transport.registrations == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "too slow" in warnings[0].getMessage()
