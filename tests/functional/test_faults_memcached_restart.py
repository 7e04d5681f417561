"""Scenario 3: memcached restarts (every key lost) under a heartbeating fleet.

Today's anchors (nova's memcache driver, tooz) read a restarted server as
"nobody ever beat": the whole fleet is down until its next heartbeat, and an
event consumer starts evacuating. Here the driver notices the restart (its
sentinel key is gone) and holds the lost keys at their last known pulse for
one down time: zero services reported down, zero down events, and a service
that really died meanwhile is still reported down once its age says so.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from servicegroup import State
from servicegroup.leader.sweeper import Sweeper
from tests.conftest import sqlite_db
from tests.functional import faultkit as fk

FLEET = 200
INTERVAL = 0.2
DOWN_TIME = 1.0
TIMEOUT = 0.3
WATCH = 3 * DOWN_TIME  # how long after the restart states are watched


@pytest.mark.timeout(120)
@pytest.mark.parametrize("layout", ["one-server", "one-of-two"])
def test_restart_loses_keys_but_nobody_is_called_down(layout, request, tmp_path, make_group):
    if layout == "one-server":
        servers = [request.getfixturevalue("memcached_server_private")]
    else:
        servers = request.getfixturevalue("memcached_pair")
    victim = servers[0]
    sg = make_group(
        sqlite_db(tmp_path),
        driver="memcached",
        report_interval=INTERVAL,
        service_down_time=DOWN_TIME,
        memcached__servers=[s.address for s in servers],
        memcached__key_prefix=f"sg-{layout}:",
        memcached__socket_timeout=TIMEOUT,
        memcached__connect_timeout=TIMEOUT,
        events__sweep_interval=0.05,
    )
    services = [sg.register(f"host-{i:03d}", "mc-fleet") for i in range(FLEET)]
    reporters = {svc.uuid: sg.join(svc) for svc in services}
    fk.wait_for(lambda: fk.all_up(sg, FLEET), "the whole fleet up")
    sweeper = Sweeper(sg, sg.conf).start()
    try:
        fk.wait_for(lambda: sweeper.stats.sweeps > 2, "the sweeper to observe the fleet")
        cursor = sg.events().cursor
        # One service really dies during the restart: its reporter stops.
        # Pick one whose key lives on the restarted server.
        dead = next(s for s in services if sg.driver._server_of(s.uuid) == 0)
        reporters[dead.uuid].stop()
        victim.restart()  # kill -9 and start: every key on it is gone
        restarted = time.monotonic()
        wrongly_down: set[str] = set()
        seen: Counter[str] = Counter()
        dead_down_after = None
        while time.monotonic() - restarted < WATCH:
            for status in sg.get_all():
                seen[status.state.value] += 1
                if status.service.uuid == dead.uuid:
                    if status.state is State.DOWN and dead_down_after is None:
                        dead_down_after = time.monotonic() - restarted
                elif status.state is State.DOWN:
                    wrongly_down.add(status.service.host)
            time.sleep(0.02)
        events = sg.events(since=cursor).events
    finally:
        sweeper.stop()

    downs = [e for e in events if e.state == "down"]
    others = Counter(f"{e.previous}->{e.state}" for e in events if e.service_id != dead.uuid)
    fk.figure(f"memcached.{layout}.services_read_down_wrongly", str(len(wrongly_down)), "")
    fk.figure(f"memcached.{layout}.states_read_after_restart", str(dict(seen)), "")
    fk.figure(f"memcached.{layout}.down_events", str([(e.host, e.cause) for e in downs][:5]), "")
    fk.figure(f"memcached.{layout}.other_events_of_live_services", str(dict(others)), "")
    fk.figure(
        f"memcached.{layout}.restart_to_dead_service_down",
        dead_down_after if dead_down_after is not None else "never",
    )
    assert not wrongly_down, f"{len(wrongly_down)} live services read down after the restart"
    assert [e.service_id for e in downs] == [dead.uuid], "only the dead service goes down"
    # While the restarted server is not yet listening its services are
    # unknown (a slow start on a loaded machine makes that visible to the
    # sweeper): up -> unknown -> up is honest; a down is not.
    assert not [k for k in others if k.endswith("->down")], f"live services went down: {others}"
    # Still reported down once its age passes the down time (plus the hold window).
    assert dead_down_after is not None
