"""The state rule: the one place that turns what a driver saw into up, down or unknown.

Drivers report when they last saw each service and whether they could tell
at all (a Pulse); this module alone decides what that means, so every driver
means the same thing by "up", and one conformance suite proves them all.
Pure: the caller passes the backend's "now" and the outage to excuse.

Usage::

    states = judge_all(services, reading.pulses, NEVER, reading.now, down_time=60.0)
    # nova-compute gets 120 s, every other binary 60 s:
    states = judge_all(services, pulses, NEVER, now, 60.0, by_binary={"nova-compute": 120.0})
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from servicegroup.drivers.base import NEVER, Pulse
from servicegroup.service import Service, State


def judge(
    service: Service,
    pulse: Pulse,
    now: datetime | None,
    down_time: float,
    outage: tuple[float, float] | None = None,
    by_binary: Mapping[str, float] | None = None,
) -> State:
    """The state rule, for every driver: forced down wins, then the backend's word.

    `outage` is (began, ended) seconds before `now` of the last time this
    process could not read liveness. That time does not count towards a
    heartbeat's age: nobody could write a heartbeat then either, so silence
    during an outage is no evidence of death. Without it, a backend back
    from an outage longer than the down time reads as a fleet that died
    (every heartbeat stale) until each service's next beat lands.
    """
    return judge_all([service], {service.uuid: pulse}, NEVER, now, down_time, outage, by_binary)[0]


def judge_all(
    services: list[Service],
    pulses: Mapping[str, Pulse],
    missing: Pulse,
    now: datetime | None,
    down_time: float,
    outage: tuple[float, float] | None = None,
    by_binary: Mapping[str, float] | None = None,
) -> list[State]:
    """judge() for many services at once; `missing` stands for a uuid absent from pulses.

    `by_binary` gives some binaries their own down time (`[binaries]`,
    binary_times.py); the others get `down_time`. A query with its own
    threshold passes that as `down_time` and no `by_binary`, so it judges
    every binary alike.

    Without an outage to excuse, up iff age = now - last_heartbeat <=
    down_time, i.e. iff the last heartbeat is at or after the cutoff
    now - down_time: one subtraction per read rather than one per service,
    which at 10,000 services matters. Within down_time after an outage, the
    age is computed per service, outage time taken out (see judge()).
    """
    up, down, unknown = State.UP, State.DOWN, State.UNKNOWN
    cutoff = None if now is None else now - timedelta(seconds=down_time)
    own = by_binary or {}
    # One cutoff per binary, not per service.
    cutoffs = {} if now is None else {b: now - timedelta(seconds=s) for b, s in own.items()}
    states: list[State] = []
    append = states.append
    get = pulses.get
    for service in services:
        pulse = get(service.uuid, missing)
        if service.deleted or service.forced_down:
            append(down)
        elif not pulse.known:
            append(unknown)
        else:
            beat = pulse.last_heartbeat
            if beat is None or now is None:
                append(down)
            elif outage is None:
                limit = cutoffs.get(service.binary, cutoff) if own else cutoff
                append(up if limit is not None and beat >= limit else down)
            else:
                age = (now - beat).total_seconds()
                began, ended = outage
                age -= max(0.0, min(age, began) - ended)
                append(up if age <= own.get(service.binary, down_time) else down)
    return states
