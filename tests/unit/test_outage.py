"""outage.py: the last liveness outage, remembered on the monotonic clock."""

from __future__ import annotations

import pytest

from servicegroup.outage import Outages
from tests.helpers import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_no_outage_nothing_to_excuse(clock: ManualClock) -> None:
    assert Outages(clock, 10.0).ago() is None


def test_an_outage_ends_at_the_first_good_read(clock: ManualClock) -> None:
    outages = Outages(clock, 10.0)
    outages.seen()
    clock.advance(4.0)
    outages.seen()  # still failing: the same outage
    clock.advance(1.0)
    assert outages.ago() == (5.0, 0.0)  # began 5 s ago, ended now
    clock.advance(2.0)
    assert outages.ago() == (7.0, 2.0)


def test_forgotten_once_the_down_time_has_passed_since_it_ended(clock: ManualClock) -> None:
    outages = Outages(clock, 10.0)
    outages.seen()
    clock.advance(3.0)
    assert outages.ago() == (3.0, 0.0)
    clock.advance(10.5)
    assert outages.ago() is None
    assert outages.ago() is None


def test_failing_again_soon_after_is_one_outage(clock: ManualClock) -> None:
    outages = Outages(clock, 10.0)
    outages.seen()
    clock.advance(2.0)
    assert outages.ago() == (2.0, 0.0)
    clock.advance(1.0)
    outages.seen()  # within the down time of the last end: the gap is counted in it
    clock.advance(1.0)
    assert outages.ago() == (4.0, 0.0)


def test_failing_long_after_starts_a_new_outage(clock: ManualClock) -> None:
    outages = Outages(clock, 10.0)
    outages.seen()
    assert outages.ago() == (0.0, 0.0)
    clock.advance(20.0)
    outages.seen()
    clock.advance(1.0)
    assert outages.ago() == (1.0, 0.0)
