"""api.py's status cache: an unchanged status is handed back, any change rebuilds it."""

from __future__ import annotations

from datetime import timedelta

from servicegroup.api import StatusReuse
from servicegroup.drivers.base import NEVER, UNKNOWN, new_pulse
from servicegroup.service import ServiceStatus, State, new_service
from tests.helpers import AT, VALUES


def test_status_reuse_hands_back_an_unchanged_status_and_rebuilds_any_change() -> None:
    reuse = StatusReuse()
    a, b = new_service(*VALUES), new_service("v", *VALUES[1:])
    pulses = {"u": new_pulse(AT), "v": new_pulse(AT)}
    first = reuse.build([a, b], [State.UP, State.UP], pulses, NEVER)
    assert first == [ServiceStatus(a, State.UP, AT), ServiceStatus(b, State.UP, AT)]
    again = reuse.build([a, b], [State.UP, State.UP], {"u": new_pulse(AT), "v": pulses["v"]}, NEVER)
    assert again[0] is first[0] and again[1] is first[1]  # an equal beat is the same beat

    changed_service = new_service(*VALUES[:6], 8, *VALUES[7:])  # report_count + 1
    later = AT + timedelta(seconds=1)
    cases = [
        (
            [changed_service, b],
            [State.UP, State.UP],
            pulses,
            ServiceStatus(changed_service, State.UP, AT),
        ),
        ([a, b], [State.DOWN, State.UP], pulses, ServiceStatus(a, State.DOWN, AT)),
        (
            [a, b],
            [State.UP, State.UP],
            {"u": new_pulse(later), "v": pulses["v"]},
            ServiceStatus(a, State.UP, later),
        ),
        (
            [a, b],
            [State.UNKNOWN, State.UP],
            {"v": pulses["v"]},
            ServiceStatus(a, State.UNKNOWN, None),
        ),
    ]
    for services, states, given, expected in cases:
        built = reuse.build(services, states, given, UNKNOWN if "u" not in given else NEVER)
        assert built[0] == expected and built[0] is not first[0]
        assert built[1] is first[1]
