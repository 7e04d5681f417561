"""Scenario 6: mass-expiry protection, end to end through a real Sweeper.

Both ways: a real mass death is reported (once it has stayed down for a
further service_down_time), and a blip (the whole binary silent for longer
than the down time, then back within the hold) is never reported. While a
binary is held, servicegroup_mass_down_protection{binary} is 1 and one log
line says so. The database-restart test (test_faults_db_restart.py) is the
other blip: there the outage rule in api.judge keeps even the reads honest.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from servicegroup.db.models import services as services_table
from servicegroup.leader.sweeper import Sweeper
from servicegroup.server import metrics
from tests.functional import faultkit as fk

INTERVAL = 0.05
DOWN_TIME = 0.5
SIZE = 5


def protection(sg, sweeper) -> dict[str, float]:
    text = metrics.render(metrics.make_registry(sg, sweeper)).decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("servicegroup_mass_down_protection{"):
            binary = line.split('binary="', 1)[1].split('"', 1)[0]
            found[binary] = float(line.rsplit(" ", 1)[1])
    return found


@pytest.fixture
def fleet(make_group, sqlite_url):
    sg = make_group(
        sqlite_url,
        report_interval=INTERVAL,
        service_down_time=DOWN_TIME,
        events__sweep_interval=0.05,
        # Every sweep a full read, as the first sweep after a database outage
        # is in effect (every service's expiry has come by then). An
        # incremental sweep reads each service at its own expected expiry,
        # so on a loaded machine silence() would be seen over two sweeps.
        events__full_sweep_interval=0.001,
    )
    doomed = [sg.register(f"m{i}", "mass") for i in range(SIZE)]
    steady = [sg.register(f"s{i}", "steady") for i in range(3)]
    reporters = {svc.uuid: sg.join(svc) for svc in doomed + steady}
    fk.wait_for(lambda: fk.all_up(sg, SIZE + 3), "everyone up")
    sweeper = Sweeper(sg, sg.conf).start()
    fk.wait_for(lambda: all(s.service.observed_state == "up" for s in sg.get_all()), "observed")
    yield sg, sweeper, doomed, reporters
    sweeper.stop()


def silence(sg, reporters, services) -> None:
    """Stop beating, and age every heartbeat past the down time in ONE transaction.

    Stopped reporters' last beats are spread over a report interval, so their
    ages would cross the down time over several sweeps; one UPDATE makes the
    binary's silence visible in one sweep, as a backend coming back with
    every heartbeat stale does.
    """
    for svc in services:
        reporters[svc.uuid].stop()
    stale = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=10 * DOWN_TIME)
    with sg.engine.begin() as conn:
        conn.execute(
            sa.update(services_table)
            .where(services_table.c.uuid.in_([svc.uuid for svc in services]))
            .values(last_seen_up=stale)
        )


def protection_lines(caplog) -> int:
    return sum("mass-down protection:" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(60)
def test_real_mass_death_is_reported_after_the_hold(fleet, caplog):
    caplog.set_level(logging.INFO, logger="servicegroup")
    sg, sweeper, doomed, reporters = fleet
    cursor = sg.events().cursor
    silence(sg, reporters, doomed)
    stopped = time.monotonic()
    fk.wait_for(lambda: protection(sg, sweeper).get("mass") == 1, "protection active")
    active_after = time.monotonic() - stopped
    assert not [e for e in sg.events(since=cursor).events if e.state == "down"]
    fk.wait_for(lambda: len(sg.events(since=cursor).events) == SIZE, "the down events")
    reported_after = time.monotonic() - stopped
    events = sg.events(since=cursor).events
    fk.figure("mass_down.stop_to_protection", active_after)
    fk.figure("mass_down.stop_to_down_events", reported_after)
    assert {(e.binary, e.previous, e.state) for e in events} == {("mass", "up", "down")}
    assert protection(sg, sweeper) == {"mass": 0}
    assert protection_lines(caplog) == 1


@pytest.mark.timeout(60)
def test_a_blip_within_the_hold_is_never_reported(fleet, caplog):
    caplog.set_level(logging.INFO, logger="servicegroup")
    sg, sweeper, doomed, reporters = fleet
    cursor = sg.events().cursor
    silence(sg, reporters, doomed)
    fk.wait_for(lambda: protection(sg, sweeper).get("mass") == 1, "protection active")
    for svc in doomed:  # back well within the hold (one down time)
        reporters[svc.uuid] = sg.join(svc)
    fk.wait_for(lambda: protection(sg, sweeper).get("mass") == 0, "protection over")
    time.sleep(2 * DOWN_TIME)  # past any hold: nothing may be released late
    events = sg.events(since=cursor).events
    fk.figure("mass_down.blip_events", str(len(events)), "")
    assert events == []
    assert protection_lines(caplog) == 1
