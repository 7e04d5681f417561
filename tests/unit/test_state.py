"""state.py: judge(), the one state rule every driver's readings go through."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from servicegroup.drivers.base import NEVER, UNKNOWN, Pulse
from servicegroup.service import State
from servicegroup.state import judge, judge_all
from tests.helpers import make_service

NOW = datetime(2026, 11, 24, 12, 0, 0, 500000, tzinfo=UTC)
DOWN_TIME = 60.0

BASE = make_service(
    uuid="6f1c5c0e-8f4e-4d5e-9a57-6d2b8b1c7a10", version=1, created_at=NOW - timedelta(days=1)
)


def beat(seconds_ago: float) -> Pulse:
    return Pulse(NOW - timedelta(seconds=seconds_ago))


FRESH = beat(1)

CASES = [
    # id, service changes, pulse, now, expected
    ("fresh beat", {}, FRESH, NOW, State.UP),
    ("beat this instant", {}, beat(0), NOW, State.UP),
    ("age == down_time is still up", {}, beat(DOWN_TIME), NOW, State.UP),
    ("one microsecond past down_time", {}, beat(DOWN_TIME + 1e-6), NOW, State.DOWN),
    ("stale beat", {}, beat(3600), NOW, State.DOWN),
    # A beat "from the future" (clocks disagree in the backend): not a reason for down.
    ("beat ahead of now", {}, beat(-5), NOW, State.UP),
    ("never beat", {}, NEVER, NOW, State.DOWN),
    ("known, but backend gave no now", {}, FRESH, None, State.DOWN),
    ("backend could not say", {}, UNKNOWN, NOW, State.UNKNOWN),
    ("backend could not say, no now", {}, UNKNOWN, None, State.UNKNOWN),
    ("forced_down wins over a fresh beat", {"forced_down": True}, FRESH, NOW, State.DOWN),
    ("forced_down wins over unknown", {"forced_down": True}, UNKNOWN, NOW, State.DOWN),
    ("deleted wins over a fresh beat", {"deleted": True}, FRESH, NOW, State.DOWN),
    ("deleted wins over unknown", {"deleted": True}, UNKNOWN, NOW, State.DOWN),
    # disabled means "schedule nothing here", not "dead": liveness is unaffected.
    ("disabled and beating", {"disabled": True}, FRESH, NOW, State.UP),
    ("disabled and silent", {"disabled": True}, NEVER, NOW, State.DOWN),
]


@pytest.mark.parametrize(
    ("changes", "pulse", "now", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_judge(changes: dict, pulse: Pulse, now: datetime | None, expected: State) -> None:
    service = dataclasses.replace(BASE, **changes)
    assert judge(service, pulse, now, DOWN_TIME) is expected


def test_judge_ignores_the_record_last_seen_up() -> None:
    # Only the driver's pulse counts: the record's column is the db driver's
    # business, and for other drivers it is stale by design.
    service = dataclasses.replace(BASE, last_seen_up=NOW)
    assert judge(service, NEVER, NOW, DOWN_TIME) is State.DOWN
    service = dataclasses.replace(BASE, last_seen_up=NOW - timedelta(days=1))
    assert judge(service, FRESH, NOW, DOWN_TIME) is State.UP


def test_judge_uses_sub_second_down_times() -> None:
    assert judge(BASE, beat(0.25), NOW, 0.3) is State.UP
    assert judge(BASE, beat(0.35), NOW, 0.3) is State.DOWN


def test_judge_all_is_judge_for_each_service_with_missing_pulses() -> None:
    """The bulk path (one cutoff per read) decides exactly as judge() does per service."""
    ages = [0, 1, DOWN_TIME - 1e-6, DOWN_TIME, DOWN_TIME + 1e-6, 3600, -5]
    pulses_for = [*(beat(a) for a in ages), NEVER, UNKNOWN, None]
    services, pulses = [], {}
    for i, pulse in enumerate(pulses_for):
        for flags in ({}, {"forced_down": True}, {"deleted": True}):
            svc = dataclasses.replace(BASE, uuid=f"{i}-{len(flags) and next(iter(flags))}", **flags)
            services.append(svc)
            if pulse is not None:
                pulses[svc.uuid] = pulse
    for missing in (NEVER, UNKNOWN):
        for now in (NOW, None):
            expected = [judge(s, pulses.get(s.uuid, missing), now, DOWN_TIME) for s in services]
            assert judge_all(services, pulses, missing, now, DOWN_TIME) == expected
    # The boundary is inclusive, as in the rule: age == down_time is still up.
    assert judge(BASE, beat(DOWN_TIME), NOW, DOWN_TIME) is State.UP
    assert judge(BASE, beat(DOWN_TIME + 1e-6), NOW, DOWN_TIME) is State.DOWN


def test_judge_all_gives_a_binary_its_own_down_time() -> None:
    compute = dataclasses.replace(BASE, uuid="c", binary="nova-compute")
    conductor = dataclasses.replace(BASE, uuid="d", binary="nova-conductor")
    other = dataclasses.replace(BASE, uuid="o", binary="nova-scheduler")
    services = [compute, conductor, other]
    pulses = {"c": beat(90), "d": beat(30), "o": beat(30)}
    own = {"nova-compute": 120.0, "nova-conductor": 20.0}
    got = judge_all(services, pulses, NEVER, NOW, DOWN_TIME, by_binary=own)
    assert got == [State.UP, State.DOWN, State.UP]
    # The edge is the same as the global one's: age == down time is still up.
    edge = {"c": beat(120), "d": beat(20), "o": beat(60)}
    assert judge_all(services, edge, NEVER, NOW, DOWN_TIME, by_binary=own) == [State.UP] * 3
    # A query's own threshold judges every binary alike (no by_binary).
    assert judge_all(services, pulses, NEVER, NOW, 10.0) == [State.DOWN] * 3
    assert judge_all(services, pulses, NEVER, NOW, 100.0) == [State.UP] * 3
    assert judge(compute, beat(90), NOW, DOWN_TIME, by_binary=own) is State.UP


def test_judge_all_excuses_an_outage_by_each_binary_own_down_time() -> None:
    compute = dataclasses.replace(BASE, uuid="c", binary="nova-compute")
    conductor = dataclasses.replace(BASE, uuid="d", binary="nova-conductor")
    own = {"nova-compute": 120.0, "nova-conductor": 20.0}
    pulses = {"c": beat(150), "d": beat(30)}
    # An outage from 100 s to 25 s ago: 75 s taken out of each age (150 -> 75, 30 -> 25).
    got = judge_all([compute, conductor], pulses, NEVER, NOW, DOWN_TIME, (100.0, 25.0), own)
    assert got == [State.UP, State.DOWN]
